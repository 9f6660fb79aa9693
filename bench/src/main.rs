//! `tidings-bench <name> [--quick] [--messages N]`: runs one benchmark and prints one JSON object per line.
//! Names: local_fanout1, local_fanout4, local_latency, local_backlog_memory, local_scaling, aws_calls, gcp_calls,
//! delay_lateness and delay_hold_calls (one line per backend each; see `delay.rs`), inbox_throughput (one line per
//! database; see `inbox.rs`), batch_throughput (one line per backend; see `batch.rs`), and the helpers
//! local_scaling_point, one point of local_scaling in a child process, and local_publish_only, for the callgrind step
//! of `scripts/bench`.
//! `scripts/bench` runs them all, one process each (peak RSS is per process). With `TIDINGS_BENCH_OBSERVE=1` a real
//! observability pipeline is installed first (Prometheus recorder, OpenTelemetry batch span exporter into a sink) and
//! the line gains `"observe"` (the Prometheus page's tidings lines).

mod batch;
mod cloud;
mod delay;
mod inbox;
mod local;
mod observe;
mod scaling;
mod util;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let name = args.get(1).cloned().unwrap_or_default();
    let quick = args.iter().any(|a| a == "--quick");
    let n = util::arg(&args, "--messages");
    let pipeline = std::env::var("TIDINGS_BENCH_OBSERVE").is_ok().then(observe::install);
    let line = match name.as_str() {
        "local_fanout1" => local::fanout(1, n.unwrap_or(if quick { 200_000 } else { 1_000_000 })).await,
        "local_fanout4" => local::fanout(4, n.unwrap_or(if quick { 200_000 } else { 1_000_000 })).await,
        "local_latency" => local::latency(if quick { 2 } else { 10 }).await,
        "local_backlog_memory" => local::backlog(n.unwrap_or(if quick { 200_000 } else { 1_000_000 })).await,
        "local_scaling" => scaling::run(quick),
        "local_scaling_point" => scaling::point(&args[2..]).await,
        "local_publish_only" => local::publish_only(n.unwrap_or(100_000)).await,
        "aws_calls" => cloud::aws(n.unwrap_or(if quick { 2_000 } else { 10_000 })).await,
        "gcp_calls" => cloud::gcp(n.unwrap_or(if quick { 2_000 } else { 10_000 })).await,
        "delay_lateness" => delay::lateness(&args[2..], quick).await,
        "delay_hold_calls" => delay::hold_calls(&args[2..], quick).await,
        "inbox_throughput" => inbox::throughput(&args[2..], quick).await,
        "batch_throughput" => batch::throughput(&args[2..], quick).await,
        other => {
            eprintln!("unknown benchmark {other:?}; one of local_fanout1 local_fanout4 local_latency local_backlog_memory local_scaling aws_calls gcp_calls delay_lateness delay_hold_calls inbox_throughput batch_throughput");
            std::process::exit(2);
        }
    };
    match pipeline {
        Some(p) => {
            let lines = p.finish();
            let line = line.strip_suffix('}').unwrap_or(&line);
            println!("{line},\"observe\":{lines}}}");
        }
        None => println!("{line}"),
    }
}

#[cfg(test)]
mod smoke {
    //! The bench code still builds and runs, on a tiny input (figures are not checked: timings are noisy).

    fn parse(line: &str) -> serde_json::Value {
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON: {line}: {e}"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn local_benchmarks_run_on_a_tiny_input() {
        let d = parse(&crate::local::fanout(4, 2_000).await);
        assert_eq!(d["bench"], "local_fanout4");
        assert!(d["tidings_msgs_per_s"].as_f64().unwrap() > 0.0 && d["omniqueue_msgs_per_s"].as_f64().unwrap() > 0.0);
        let d = parse(&crate::local::backlog(10_000).await);
        assert!(d["independence_ratio"].as_f64().unwrap() > 0.0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn inbox_throughput_runs_on_both_databases() {
        let args: Vec<String> = ["--messages", "50", "--rounds", "1"].map(String::from).to_vec();
        let out = crate::inbox::throughput(&args, false).await;
        let lines: Vec<serde_json::Value> = out.lines().map(parse).collect();
        assert_eq!(lines.len(), 2, "{out}");
        for (d, db) in lines.iter().zip(["postgres", "sqlite"]) {
            assert_eq!(d["bench"], format!("inbox_throughput_{db}"));
            assert!(
                d["inbox_msgs_per_s"].as_f64().unwrap() > 0.0 && d["hand_written_msgs_per_s"].as_f64().unwrap() > 0.0
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn delay_lateness_runs_on_the_in_memory_bus() {
        let args: Vec<String> =
            ["--backends", "local", "--messages", "10", "--phases", "idle"].map(String::from).to_vec();
        let d = parse(&crate::delay::lateness(&args, false).await);
        assert_eq!(d["bench"], "delay_lateness_local");
        assert_eq!((d["idle_missing"].as_u64(), d["idle_duplicates"].as_u64()), (Some(0), Some(0)), "{d}");
        assert_eq!(d["idle_early"], 0, "never before the due time: {d}");
    }
}
