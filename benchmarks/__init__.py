"""Speed and memory benchmarks; `python -m benchmarks <name>` (not run by the tests)."""
