"""asv benchmarks of zerodl (one bench_<op>.py per kernel family)."""
