//! `tidings-bench <name> [--quick] [--messages N]`: runs one benchmark and prints one JSON object per line.
//! Names: local_fanout1, local_fanout4, local_latency, local_backlog_memory, aws_calls, gcp_calls.
//! `scripts/bench` runs them all, one process each (peak RSS is per process).

mod cloud;
mod local;
mod util;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let name = args.get(1).cloned().unwrap_or_default();
    let quick = args.iter().any(|a| a == "--quick");
    let n = util::arg(&args, "--messages");
    let line = match name.as_str() {
        "local_fanout1" => local::fanout(1, n.unwrap_or(if quick { 200_000 } else { 1_000_000 })).await,
        "local_fanout4" => local::fanout(4, n.unwrap_or(if quick { 200_000 } else { 1_000_000 })).await,
        "local_latency" => local::latency(if quick { 2 } else { 10 }).await,
        "local_backlog_memory" => local::backlog(n.unwrap_or(if quick { 200_000 } else { 1_000_000 })).await,
        "aws_calls" => cloud::aws(n.unwrap_or(if quick { 2_000 } else { 10_000 })).await,
        "gcp_calls" => cloud::gcp(n.unwrap_or(if quick { 2_000 } else { 10_000 })).await,
        other => {
            eprintln!("unknown benchmark {other:?}; one of local_fanout1 local_fanout4 local_latency local_backlog_memory aws_calls gcp_calls");
            std::process::exit(2);
        }
    };
    println!("{line}");
}
