"""`python -m bench` (`make bench`): every benchmark, each printing its ratio against a baseline of the same run.

Sizes come from SENTINEL_BENCH_* variables (see each module's docstring) so a quick run can be small.
"""

from bench import (
    bench_ctcae,
    bench_ingest,
    bench_notify,
    bench_notify_backlog,
    bench_outbox,
    bench_pipeline,
    bench_safety,
)

if __name__ == "__main__":
    bench_ctcae.main()
    bench_ingest.main()
    bench_safety.main()
    bench_outbox.main()
    bench_notify.main()
    bench_notify_backlog.main([])
    bench_pipeline.main()
