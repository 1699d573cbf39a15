//! CPU time from Linux's per-thread scheduler statistics, shared by the benches.

/// CPU time of every thread under `task_dir` (`/proc/<pid>/task`) so far, in ns: the first
/// field of each thread's `schedstat`. Threads that already ended are not counted.
pub(crate) fn threads_cpu_ns(task_dir: &str) -> u64 {
    std::fs::read_dir(task_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}
