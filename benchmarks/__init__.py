"""visprior's speed and memory benchmarks: ``python -m benchmarks [--quick]``."""
