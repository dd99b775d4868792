"""Network benchmarks: echo, HTTP and churn servers on asyncio, uvloop,
aloop and a raw C server; see benchmarks/README.md and run.py."""
