//! `shardcore ctl`: the shard controller from the command line. One operation per run, readable
//! output, and exit codes a script can branch on:
//!
//! | exit | meaning |
//! |---|---|
//! | 0 | done (a change prints the config it made; a query prints the config) |
//! | 1 | refused by the controller (the reason is printed: a group joining twice, ...) |
//! | 2 | usage: bad arguments |
//! | 3 | no answer: cluster unreachable, timeout, or the outcome of a change is unknown |
//!
//! Unlike `shardcore kv` (whose exit 1 means "not found"), a refusal and an unreachable
//! cluster differ here: a script joining groups must tell "already joined" from "try again".
//!
//! `join` gives each group the replicas named with `--replica NODE[:CORE]`, or by default every
//! node of the cluster (node ids 1..=the endpoints given, as `--endpoints` lists them in id
//! order): every node hosts every group. With `--cores N` the default replicas name the core the
//! placement rule puts the group on in a node of N cores; without it they name no core and each
//! node applies the same rule with its own core count.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use super::cli::{run_on_one_core, Endpoints};
use super::{Client, ClientError};
use crate::node::placement::{core_of_group, CONTROLLER_GROUP};
use crate::raft::GroupId;
use crate::shardctl::{Config, Replica, ShardId, LATEST, NO_GROUP};

/// One controller operation (the `shardcore ctl` subcommands).
#[derive(Clone, Debug, PartialEq, Eq, clap::Subcommand)]
pub enum CtlCommand {
    /// Add groups; the controller rebalances shards onto them.
    Join {
        /// The group ids (at least one).
        #[arg(required = true)]
        groups: Vec<GroupId>,
        /// A replica of every joining group, as NODE or NODE:CORE; repeat for each (default:
        /// every node of the cluster).
        #[arg(long = "replica", value_parser = parse_replica)]
        replicas: Vec<Replica>,
        /// Name, in the default replicas, the core a node of this many cores places the group
        /// on (default: no core; each node places it by its own core count).
        #[arg(long)]
        cores: Option<usize>,
    },
    /// Remove groups; their shards go to the others.
    Leave {
        /// The group ids (at least one).
        #[arg(required = true)]
        groups: Vec<GroupId>,
    },
    /// Put one shard on one group (no rebalance until the next join or leave).
    Move {
        /// The shard.
        shard: ShardId,
        /// The group.
        group: GroupId,
    },
    /// Print a configuration: the latest, or number NUM.
    Query {
        /// The configuration number (default: the latest).
        num: Option<u64>,
    },
}

fn parse_replica(text: &str) -> Result<Replica, String> {
    let err = || format!("--replica {text:?}: expected NODE or NODE:CORE");
    let (node, core) = match text.split_once(':') {
        Some((node, core)) => (node, Some(core.parse::<u32>().map_err(|_| err())?)),
        None => (text, None),
    };
    let node = node.parse::<u64>().map_err(|_| err())?;
    if node == 0 {
        return Err(format!("--replica {text:?}: node ids start at 1"));
    }
    Ok(Replica { node, core })
}

/// Runs one command and returns (text to print, exit code).
pub fn run(endpoints: Endpoints, timeout: Duration, command: CtlCommand) -> (String, u8) {
    if let Err(why) = check(&command, endpoints.addrs.len()) {
        return (format!("error: {why}"), 2);
    }
    run_on_one_core("shardcore-ctl", 3, move || {
        execute(endpoints.clone(), timeout, command.clone())
    })
}

/// Usage mistakes the controller would not catch, or would catch only after a round trip.
fn check(command: &CtlCommand, nodes: usize) -> Result<(), String> {
    if nodes == 0 {
        return Err("no --endpoints given".to_string());
    }
    let groups: &[GroupId] = match command {
        CtlCommand::Join { groups, .. } | CtlCommand::Leave { groups } => groups,
        CtlCommand::Move { group, .. } => std::slice::from_ref(group),
        CtlCommand::Query { .. } => &[],
    };
    if groups.contains(&CONTROLLER_GROUP) {
        return Err(format!(
            "group {CONTROLLER_GROUP} is reserved for the shard controller itself"
        ));
    }
    if let CtlCommand::Join { cores: Some(0), .. } = command {
        return Err("--cores must be at least 1".to_string());
    }
    Ok(())
}

/// The replicas of joining `group`: the ones given, or every node (see the module docs).
pub fn join_replicas(
    group: GroupId,
    given: &[Replica],
    nodes: usize,
    cores: Option<usize>,
) -> Vec<Replica> {
    if !given.is_empty() {
        return given.to_vec();
    }
    let core = cores.map(|cores| core_of_group(group, cores) as u32);
    (1..=nodes as u64)
        .map(|node| Replica { node, core })
        .collect()
}

async fn execute(endpoints: Endpoints, timeout: Duration, command: CtlCommand) -> (String, u8) {
    let nodes = endpoints.addrs.len();
    let config = endpoints.client_config(timeout);
    let client = match Client::new(config) {
        Ok(client) => client,
        Err(e) => return (format!("error: {e}"), 2),
    };
    let result = match command {
        CtlCommand::Join {
            groups,
            replicas,
            cores,
        } => {
            let joining: BTreeMap<GroupId, Vec<Replica>> = groups
                .iter()
                .map(|&g| (g, join_replicas(g, &replicas, nodes, cores)))
                .collect();
            let names = group_list(&groups);
            client
                .ctl_join(joining)
                .await
                .map(|num| format!("config {num}: joined {names}"))
        }
        CtlCommand::Leave { groups } => {
            let names = group_list(&groups);
            client
                .ctl_leave(groups)
                .await
                .map(|num| format!("config {num}: {names} left"))
        }
        CtlCommand::Move { shard, group } => client
            .ctl_move(shard, group)
            .await
            .map(|num| format!("config {num}: shard {shard} -> g{group}")),
        CtlCommand::Query { num } => client
            .ctl_query(num.unwrap_or(LATEST))
            .await
            .map(|config| format_config(&config)),
    };
    match result {
        Ok(text) => (text, 0),
        Err(ClientError::Refused(why)) => (format!("refused: {why}"), 1),
        // Only shard groups say this; the controller never does.
        Err(e @ ClientError::WrongShard { .. }) => (format!("refused: {e}"), 1),
        Err(e @ ClientError::Config(_)) => (format!("error: {e}"), 2),
        Err(ClientError::Timeout) => (
            format!(
                "error: no answer within {} s (cluster unreachable, or no controller leader); \
                 a change may still take effect",
                timeout.as_secs()
            ),
            3,
        ),
        Err(e @ ClientError::Unknown) => (format!("error: {e}"), 3),
    }
}

fn group_list(groups: &[GroupId]) -> String {
    let names: Vec<String> = groups.iter().map(|g| format!("g{g}")).collect();
    names.join(", ")
}

/// A configuration as people read it: its number, the shard → group map as runs of shards
/// ("0-21 -> g1"), and each group's replicas ("n1 n2:0").
pub fn format_config(config: &Config) -> String {
    let mut out = format!(
        "config {}: {} shards, {} groups",
        config.num,
        config.shard_count(),
        config.groups.len()
    );
    let mut start = 0;
    for shard in 1..=config.shards.len() {
        if shard < config.shards.len() && config.shards[shard] == config.shards[start] {
            continue;
        }
        let group = config.shards[start];
        let shards = if shard - start == 1 {
            format!("{start}")
        } else {
            format!("{start}-{}", shard - 1)
        };
        let owner = if group == NO_GROUP {
            "none".to_string()
        } else {
            format!("g{group}")
        };
        let _ = write!(out, "\n  shards {shards} -> {owner}");
        start = shard;
    }
    for (group, replicas) in &config.groups {
        let names: Vec<String> = replicas
            .iter()
            .map(|r| match r.core {
                Some(core) => format!("n{}:{core}", r.node),
                None => format!("n{}", r.node),
            })
            .collect();
        let _ = write!(out, "\n  g{group}: {}", names.join(" "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs of shards print as ranges, single shards alone, unassigned as "none"; replicas
    /// with and without cores.
    #[test]
    fn config_prints_compactly() {
        let initial = Config::initial(4);
        assert_eq!(
            format_config(&initial),
            "config 0: 4 shards, 0 groups\n  shards 0-3 -> none"
        );
        let c1 = initial
            .join(&BTreeMap::from([
                (1, vec![Replica::on(1), Replica::on(2)]),
                (
                    2,
                    vec![Replica {
                        node: 3,
                        core: Some(0),
                    }],
                ),
            ]))
            .expect("join");
        let c2 = c1.move_shard(0, 2).expect("move");
        assert_eq!(
            format_config(&c2),
            "config 2: 4 shards, 2 groups\n  shards 0 -> g2\n  shards 1 -> g1\n  \
             shards 2-3 -> g2\n  g1: n1 n2\n  g2: n3:0"
        );
    }

    #[test]
    fn replicas_parse_and_default_to_every_node() {
        assert_eq!(parse_replica("3"), Ok(Replica::on(3)));
        assert_eq!(
            parse_replica("2:1"),
            Ok(Replica {
                node: 2,
                core: Some(1)
            })
        );
        assert!(parse_replica("0").is_err());
        assert!(parse_replica("x:1").is_err());
        assert!(parse_replica("1:").is_err());
        assert_eq!(
            join_replicas(5, &[], 3, None),
            vec![Replica::on(1), Replica::on(2), Replica::on(3)]
        );
        let core = core_of_group(5, 4) as u32;
        assert!(join_replicas(5, &[], 2, Some(4))
            .iter()
            .all(|r| r.core == Some(core)));
        assert_eq!(
            join_replicas(5, &[Replica::on(9)], 3, None),
            vec![Replica::on(9)]
        );
    }

    #[test]
    fn usage_mistakes_are_caught_before_connecting() {
        let join = |groups: Vec<GroupId>, cores| CtlCommand::Join {
            groups,
            replicas: Vec::new(),
            cores,
        };
        assert!(check(&join(vec![1], None), 3).is_ok());
        assert!(check(&join(vec![CONTROLLER_GROUP], None), 3)
            .unwrap_err()
            .contains("reserved"));
        assert!(check(&join(vec![1], Some(0)), 3).is_err());
        assert!(check(&CtlCommand::Query { num: None }, 0).is_err());
    }
}
