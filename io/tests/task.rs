//! When a spawned task first runs (`spawn` at once, `spawn_queued` behind the ready tasks), and
//! that cores in a closed loop never stall when preemption timers fire often.

mod support;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use shardcore_io::{
    sleep, spawn, spawn_queued, yield_now, Core, RuntimeConfig, TcpListener, TcpStream,
};
use support::run_cores;

/// `spawn` runs the new task up to its first await before returning; `spawn_queued` runs it
/// only after the spawner yields, behind the tasks that were ready before it.
#[test]
fn spawn_runs_at_once_and_spawn_queued_runs_behind_ready_tasks() {
    let orders = run_cores(1, 8, |_: Core<()>| async {
        let order = Rc::new(RefCell::new(Vec::new()));
        let log = |what: &'static str| {
            let order = order.clone();
            move || order.borrow_mut().push(what)
        };
        let queued = spawn_queued({
            let done = log("queued");
            async move { done() }
        });
        let ready = spawn({
            let (before, after) = (log("spawned: first part"), log("spawned: after yield"));
            async move {
                before();
                yield_now().await;
                after();
            }
        });
        order.borrow_mut().push("spawner");
        yield_now().await;
        ready.await;
        queued.await;
        order.take()
    });
    assert_eq!(
        orders,
        vec![vec![
            "spawned: first part",
            "spawner",
            "queued",
            "spawned: after yield"
        ]]
    );
}

/// Two cores in a closed loop never stall, with preemption timers that fire every 20 us (so
/// one often fires between an executor's poll and its look at its task queues): 20,000 round
/// trips of a TCP ping-pong between the cores finish (the runtime's deadline turns a stall
/// into a failure). Why: the vendored glommio keeps pending preemption timers across executor
/// turns (third_party/glommio/SHARDCORE.md); a version of it then parked with tasks ready and
/// slept until the next I/O, which in a closed loop never comes (a one-client load generator
/// hung so within seconds).
#[test]
fn a_closed_loop_never_stalls_when_preemption_timers_fire_often() {
    const ROUNDS: u32 = 20_000;
    // Core 0's listening address, for core 1.
    let listening = Arc::new(Mutex::new(None::<SocketAddr>));
    let config = RuntimeConfig {
        preempt_timer: Duration::from_micros(20),
        ..support::test_config(2, 8)
    };
    let rounds = support::run_config(config, move |core: Core<()>| {
        let listening = listening.clone();
        async move {
            if core.id().0 == 0 {
                let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
                *listening.lock().unwrap() = Some(listener.local_addr().unwrap());
                let mut stream = listener.accept().await.unwrap();
                let mut buf = [0u8; 4];
                let mut echoed = 0;
                while stream.read_exact(&mut buf).await.is_ok() {
                    stream.write_all(&buf).await.unwrap();
                    echoed += 1;
                }
                return echoed;
            }
            let addr = loop {
                if let Some(addr) = *listening.lock().unwrap() {
                    break addr;
                }
                sleep(Duration::from_millis(1)).await;
            };
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let mut buf = [0u8; 4];
            for round in 0..ROUNDS {
                stream.write_all(&round.to_be_bytes()).await.unwrap();
                stream.read_exact(&mut buf).await.unwrap();
                assert_eq!(u32::from_be_bytes(buf), round);
            }
            ROUNDS
        }
    });
    assert_eq!(rounds, vec![ROUNDS, ROUNDS]);
}
