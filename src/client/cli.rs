//! `shardcore kv`: the command-line client. One operation per run, readable output, and exit
//! codes a script can branch on:
//!
//! | exit | meaning |
//! |---|---|
//! | 0 | done (a get found the key; a cas swapped) |
//! | 1 | a get found no value; a cas found another value (printed) |
//! | 2 | failed: timeout, refused, bad arguments, cluster unreachable |

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;

use super::{Client, ClientConfig, ClientError};
use crate::kv::Consistency;

/// One operation of the command-line client (also its `shardcore kv` subcommands).
#[derive(Clone, Debug, PartialEq, Eq, clap::Subcommand)]
pub enum KvCommand {
    /// Print a key's value (exit 1 if absent).
    Get {
        /// The key.
        key: String,
        /// Serve from any replica, possibly stale.
        #[arg(long)]
        serializable: bool,
    },
    /// Ask shard group GROUP directly for a key, without routing (sharded clusters only):
    /// prints the value; exits 2 ("wrong shard") unless GROUP serves the key's shard now. For
    /// scripts that watch a shard move to its new owner.
    GroupGet {
        /// The shard group.
        group: u64,
        /// The key.
        key: String,
    },
    /// Set a key.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Append to a key's value.
    Append {
        /// The key.
        key: String,
        /// What to append.
        value: String,
    },
    /// Remove a key.
    Delete {
        /// The key.
        key: String,
    },
    /// Set KEY to NEW only if it holds EXPECTED (or, with --absent, only if it is absent);
    /// exit 1 if it did not swap.
    Cas {
        /// The key.
        key: String,
        /// The value it must hold (omit with --absent).
        expected: Option<String>,
        /// The new value.
        #[arg(long)]
        new: String,
        /// Swap only if the key is absent.
        #[arg(long)]
        absent: bool,
    },
}

/// Where the cluster is (the `--endpoints`, `--cluster-id`, `--groups` and `--sharded` flags of
/// every command that talks to one).
#[derive(Clone, Debug, clap::Args)]
pub struct Endpoints {
    /// Client addresses of the nodes, in node-id order, comma-separated.
    #[arg(
        long = "endpoints",
        value_delimiter = ',',
        default_value = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003"
    )]
    pub addrs: Vec<SocketAddr>,
    /// The cluster's name.
    #[arg(long, default_value = "local")]
    pub cluster_id: String,
    /// The cluster's KV group count (fixed placement; ignored with --sharded).
    #[arg(long, default_value_t = 8)]
    pub groups: u64,
    /// The cluster runs the sharded KV (its nodes have `sharded = true`): route each key by
    /// the shard controller's latest configuration. Routing is chosen, not detected, so that a
    /// KV cluster whose controller happens to hold groups is never misrouted.
    #[arg(long)]
    pub sharded: bool,
}

/// Runs one command and returns (text to print, exit code).
pub fn run(endpoints: Endpoints, timeout: Duration, command: KvCommand) -> (String, u8) {
    if let KvCommand::Cas {
        expected, absent, ..
    } = &command
    {
        if *absent == expected.is_some() {
            return (
                "error: cas takes EXPECTED or --absent, exactly one".to_string(),
                2,
            );
        }
    }
    run_on_one_core("shardcore-kv", 2, move || {
        execute(endpoints.clone(), timeout, command.clone())
    })
}

/// Runs a command's client on a one-core, unpinned runtime named `name` and returns what it
/// printed and its exit code; `failed` is the exit code when the runtime cannot start (or the
/// command produced nothing).
pub(super) fn run_on_one_core<F, Fut>(name: &str, failed: u8, command: F) -> (String, u8)
where
    F: Fn() -> Fut + Send + Clone + 'static,
    Fut: std::future::Future<Output = (String, u8)> + 'static,
{
    let runtime = shardcore_io::RuntimeConfig {
        cores: 1,
        pinning: shardcore_io::runtime::Pinning::Unpinned,
        name: name.to_string(),
        ..shardcore_io::RuntimeConfig::default()
    };
    match shardcore_io::run(runtime, move |_core: shardcore_io::Core<()>| command()) {
        Ok(mut outputs) => outputs
            .pop()
            .unwrap_or_else(|| ("no result".to_string(), failed)),
        Err(e) => (
            format!("error: cannot start the client runtime: {e}"),
            failed,
        ),
    }
}

/// Adds what to try when the answer says the client routed by the wrong rule: sharded nodes
/// refuse the fixed path's session registration as a bad request and answer a request for a
/// shard they do not hold with `WrongShard`; any node refuses a group it does not host.
fn with_hint(text: String, error: &ClientError, sharded: bool) -> String {
    let hint = match error {
        ClientError::WrongShard { .. } if !sharded => "is the cluster sharded? add --sharded",
        ClientError::Refused(why) if why.contains("BadRequest") && !sharded => {
            "is the cluster sharded? add --sharded"
        }
        ClientError::Refused(why) if why.contains("WrongGroup") => {
            "the nodes host fewer groups: check --groups, or add --sharded for a sharded cluster"
        }
        _ => return text,
    };
    format!("{text} ({hint})")
}

impl Endpoints {
    /// The client settings these flags give: node i (from 1) at the i-th address, the cluster
    /// id, the fixed groups, each operation's timeout. Sharded routing is the caller's choice.
    pub(super) fn client_config(&self, timeout: Duration) -> ClientConfig {
        let nodes = self.addrs.iter().enumerate();
        let mut config = ClientConfig::new(nodes.map(|(i, a)| (i as u64 + 1, *a)).collect());
        config.cluster_id = self.cluster_id.clone();
        config.groups = self.groups;
        config.op_timeout = timeout;
        config
    }
}

async fn execute(endpoints: Endpoints, timeout: Duration, command: KvCommand) -> (String, u8) {
    let mut config = endpoints.client_config(timeout);
    config.sharded = endpoints.sharded;
    let client = match Client::new(config) {
        Ok(client) => client,
        Err(e) => return (format!("error: {e}"), 2),
    };
    let sharded = endpoints.sharded;
    let fail = |e: ClientError| (with_hint(format!("error: {e}"), &e, sharded), 2u8);
    let b = |s: &str| Bytes::copy_from_slice(s.as_bytes());
    match command {
        KvCommand::Get { key, serializable } => {
            let consistency = if serializable {
                Consistency::Serializable
            } else {
                Consistency::Linearizable
            };
            match client.get_with(b(&key), consistency).await {
                Ok(Some(value)) => (String::from_utf8_lossy(&value).into_owned(), 0),
                Ok(None) => (format!("(not found: {key})"), 1),
                Err(e) => fail(e),
            }
        }
        KvCommand::GroupGet { group, key } if sharded => {
            match client.get_from_group(group, b(&key)).await {
                Ok(Some(value)) => (String::from_utf8_lossy(&value).into_owned(), 0),
                Ok(None) => (format!("(not found: {key})"), 1),
                Err(e) => fail(e),
            }
        }
        KvCommand::GroupGet { .. } => (
            "error: group-get asks a shard group: add --sharded".to_string(),
            2,
        ),
        KvCommand::Put { key, value } => match client.put(b(&key), b(&value)).await {
            Ok(()) => ("OK".to_string(), 0),
            Err(e) => fail(e),
        },
        KvCommand::Append { key, value } => match client.append(b(&key), b(&value)).await {
            Ok(()) => ("OK".to_string(), 0),
            Err(e) => fail(e),
        },
        KvCommand::Delete { key } => match client.delete(b(&key)).await {
            Ok(()) => ("OK".to_string(), 0),
            Err(e) => fail(e),
        },
        KvCommand::Cas {
            key, expected, new, ..
        } => {
            let expected = expected.as_deref().map(b);
            match client.compare_and_swap(b(&key), expected, b(&new)).await {
                Ok((true, _)) => ("OK (swapped)".to_string(), 0),
                Ok((false, found)) => {
                    let found = found.map_or("(absent)".to_string(), |v| {
                        format!("{:?}", String::from_utf8_lossy(&v))
                    });
                    (format!("not swapped: the key holds {found}"), 1)
                }
                Err(e) => fail(e),
            }
        }
    }
}
