"""`make bench` and the tools it shares with the other benches."""

# What deploy.sh sets for a 2-vCPU instance with its default --concurrency; every bench runs the
# function with the same (tests/test_deploy.py checks the two agree).
PROCESS_SETTINGS = {"WORKERS": "2", "THREADS": "256"}
UPSTREAM_LATENCY = 0.020  # seconds added to every emulated Google call, unless a bench says otherwise
