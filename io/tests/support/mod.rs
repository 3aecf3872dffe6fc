//! Helpers shared by the io integration tests: start a runtime of a few cores with a deadline,
//! so that a lost wakeup fails the test instead of hanging it.

#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use shardcore_io::{run, timeout, Core, Pinning, RuntimeConfig};

/// Long enough for anything these tests do on a loaded 2-core machine, short enough that a hang
/// is reported within the test run.
pub const TEST_DEADLINE: Duration = Duration::from_secs(30);

/// Runs `f` on `cores` unpinned cores with mesh queues of `mesh_capacity`, and returns every
/// core's output; panics (naming the core) if any core takes longer than [`TEST_DEADLINE`].
pub fn run_cores<M, T, F, Fut>(cores: usize, mesh_capacity: usize, f: F) -> Vec<T>
where
    M: Send + 'static,
    T: Send + 'static,
    F: Fn(Core<M>) -> Fut + Send + Clone + 'static,
    Fut: Future<Output = T> + 'static,
{
    run_config(test_config(cores, mesh_capacity), f)
}

/// The tests' runtime: `cores` unpinned cores with mesh queues of `mesh_capacity`.
pub fn test_config(cores: usize, mesh_capacity: usize) -> RuntimeConfig {
    RuntimeConfig {
        cores,
        pinning: Pinning::Unpinned,
        name: "io-test".to_string(),
        mesh_capacity,
        ..RuntimeConfig::default()
    }
}

/// As [`run_cores`], with the runtime `cfg`.
pub fn run_config<M, T, F, Fut>(cfg: RuntimeConfig, f: F) -> Vec<T>
where
    M: Send + 'static,
    T: Send + 'static,
    F: Fn(Core<M>) -> Fut + Send + Clone + 'static,
    Fut: Future<Output = T> + 'static,
{
    run(cfg, move |core| {
        let f = f.clone();
        async move {
            let id = core.id();
            match timeout(TEST_DEADLINE, f(core)).await {
                Ok(output) => output,
                Err(elapsed) => panic!("core {}: {elapsed}", id.0),
            }
        }
    })
    .unwrap_or_else(|error| panic!("runtime: {error}"))
}
