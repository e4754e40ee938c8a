"""`python -m bench` (`make bench`): every benchmark, each printing its ratio against a baseline of the same run."""

from bench import bench_ctcae, bench_ingest

if __name__ == "__main__":
    bench_ctcae.main()
    bench_ingest.main()
