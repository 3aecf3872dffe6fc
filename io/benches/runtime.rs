//! The runtime's round trips between two cores: `cargo bench -p shardcore-io --bench runtime`
//! (or, built as tests are, `cargo test -p shardcore-io --bench runtime`).
//!
//! Prints, for two cores (pinned when the machine has two CPUs for them):
//! - **mesh round trips/s**: core 0 sends a number over the mesh, core 1 sends it back; one in
//!   flight, so this is the cross-core wakeup latency;
//! - **mesh messages/s one way**: core 0 streams numbers to core 1 through a full-size queue;
//! - **TCP frame round trips/s**: a 64-byte frame over loopback, echoed by the other core,
//!   one in flight;
//! - **TCP frames/s with 64 in flight**: the same with a window of 64, where the writers coalesce.
//!
//! Each with CPU time per operation (both cores together, from `getrusage`), which tells an
//! idle-sleeping runtime from a spinning one; all four run twice, with no idle spin (cores sleep
//! as soon as they are idle) and with a 50 us spin. Numbers only, never pass or fail.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use shardcore_io::{
    process_cpu_time, run, Core, CoreId, FrameReader, Pinning, RuntimeConfig, TcpListener,
    TcpStream,
};
use shardcore_protocol::FrameKind;

/// How long each measurement runs. Why 1 s: long enough to average over scheduler noise on a
/// shared 2-core machine, short enough that the four stay under ten seconds.
const MEASURE: Duration = Duration::from_secs(1);
/// The body of each TCP frame: a small Raft message or client request.
const FRAME_BODY_BYTES: usize = 64;
/// The idle spin of the second run. Why 50 us: about one cross-core round trip on this class of
/// machine, so a core answering a steady exchange rarely has to sleep.
const SPIN: Duration = Duration::from_micros(50);
/// Frames in flight in the pipelined TCP measurement.
const WINDOW: u64 = 64;

/// What core 0 measured: operations, wall time.
type Measured = (u64, Duration);

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("io runtime, 2 cores ({} CPUs available)", cpus);
    for spin in [Duration::ZERO, SPIN] {
        println!("idle spin {spin:?}:");
        report("mesh round trips", measure(spin, mesh_round_trips));
        report("mesh messages one way", measure(spin, mesh_one_way));
        report("TCP frame round trips", measure(spin, |core| tcp(core, 1)));
        let pipelined = format!("TCP frames, {WINDOW} in flight");
        report(&pipelined, measure(spin, |core| tcp(core, WINDOW)));
    }
}

/// Runs `f` on two cores and returns core 0's measurement and the CPU time of the whole run.
fn measure<Fut>(
    idle_spin: Duration,
    f: impl Fn(Core<Msg>) -> Fut + Send + Clone + 'static,
) -> (Measured, Duration)
where
    Fut: std::future::Future<Output = Option<Measured>> + 'static,
{
    let cfg = RuntimeConfig {
        cores: 2,
        pinning: Pinning::Pinned,
        name: "io-bench".to_string(),
        idle_spin,
        ..RuntimeConfig::default()
    };
    let before = process_cpu_time().unwrap();
    let results = run(cfg, f).unwrap();
    let cpu = process_cpu_time().unwrap().total() - before.total();
    (results[0].expect("core 0 measures"), cpu)
}

fn report(what: &str, ((ops, wall), cpu): (Measured, Duration)) {
    let per_second = ops as f64 / wall.as_secs_f64();
    let cpu_us = cpu.as_secs_f64() * 1e6 / ops as f64;
    println!(
        "{what:>30}: {per_second:>12.0} /s   {cpu_us:>7.2} us CPU per op   ({ops} in {wall:.2?})"
    );
}

/// The mesh message: a number, or an address to connect to.
enum Msg {
    Number(u64),
    Addr(SocketAddr),
}

async fn mesh_round_trips(core: Core<Msg>) -> Option<Measured> {
    let inbox = core.take_receiver().unwrap();
    if core.id() == CoreId(1) {
        while let Some((from, message)) = inbox.recv().await {
            if core.send(from, message).await.is_err() {
                break;
            }
        }
        return None;
    }
    let started = Instant::now();
    let mut trips = 0;
    while started.elapsed() < MEASURE {
        core.send(CoreId(1), Msg::Number(trips)).await.unwrap();
        inbox.recv().await.unwrap();
        trips += 1;
    }
    Some((trips, started.elapsed()))
}

async fn mesh_one_way(core: Core<Msg>) -> Option<Measured> {
    let inbox = core.take_receiver().unwrap();
    if core.id() == CoreId(1) {
        let mut received = 0u64;
        while let Some((from, message)) = inbox.recv().await {
            match message {
                Msg::Number(u64::MAX) => {
                    core.send(from, Msg::Number(received)).await.unwrap();
                    break;
                }
                _ => received += 1,
            }
        }
        return None;
    }
    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < MEASURE {
        for _ in 0..1000 {
            core.send(CoreId(1), Msg::Number(sent)).await.unwrap();
            sent += 1;
        }
    }
    core.send(CoreId(1), Msg::Number(u64::MAX)).await.unwrap();
    let Some((_, Msg::Number(received))) = inbox.recv().await else {
        panic!("a count")
    };
    assert_eq!(received, sent);
    Some((sent, started.elapsed()))
}

/// Core 1 echoes frames; core 0 keeps `window` frames in flight for [`MEASURE`].
async fn tcp(core: Core<Msg>, window: u64) -> Option<Measured> {
    let inbox = core.take_receiver().unwrap();
    if core.id() == CoreId(1) {
        let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        core.send(CoreId(0), Msg::Addr(addr)).await.unwrap();
        let (mut reader, writer) = listener.accept().await.unwrap().into_framed();
        while let Ok(Some(frame)) = reader.next_frame().await {
            writer.send(frame.kind, &frame.body).await.unwrap();
        }
        return None;
    }
    let Some((_, Msg::Addr(addr))) = inbox.recv().await else {
        panic!("an address")
    };
    let (mut reader, writer) = TcpStream::connect(addr).await.unwrap().into_framed();
    let body = [7u8; FRAME_BODY_BYTES];
    let started = Instant::now();
    for _ in 0..window {
        writer.send(FrameKind::PeerRaft, &body).await.unwrap();
    }
    let mut trips = 0;
    while started.elapsed() < MEASURE {
        next(&mut reader).await;
        trips += 1;
        writer.send(FrameKind::PeerRaft, &body).await.unwrap();
    }
    let elapsed = started.elapsed();
    for _ in 0..window {
        next(&mut reader).await;
    }
    drop((writer, reader));
    Some((trips, elapsed))
}

async fn next(reader: &mut FrameReader) {
    reader.next_frame().await.unwrap().expect("an echo");
}
