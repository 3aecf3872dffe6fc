//! Linearizable key/value histories made to order, for the checker's tests and benchmark: a
//! sequential key/value store driven by concurrent clients, each operation taking effect at a
//! random instant inside its call–return interval, so every generated history is linearizable
//! by construction (that instant order is a witness), at any length and concurrency.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};

use crate::history::{HistoryOp, OpKind};
use crate::rng::Rng;

/// What to generate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenerateOptions {
    /// Seeds every draw.
    pub seed: u64,
    /// Operations in the history.
    pub ops: usize,
    /// Concurrent clients, each with one operation outstanding at a time.
    pub clients: u64,
    /// Keys, `k0`, `k1`, …, chosen uniformly.
    pub keys: usize,
    /// Out of 1000 operations, how many time out: the client never learns the outcome
    /// (`ok: null`), and a write among them takes effect or not, half of the time each.
    pub timeouts_per_mille: u64,
    /// An operation takes between 1 and this many nanoseconds from call to return.
    pub max_latency_ns: u64,
    /// A client waits between 0 and this many nanoseconds before its next call.
    pub max_think_ns: u64,
    /// A timed-out operation returns (to its client) this long after its call.
    pub timeout_ns: u64,
}

impl Default for GenerateOptions {
    /// 10,000 operations from 15 clients on 5 keys, 1% timeouts; latency up to 10 µs and think
    /// time up to 2 µs, so about 13 operations are in flight at any time.
    fn default() -> Self {
        GenerateOptions {
            seed: 1,
            ops: 10_000,
            clients: 15,
            keys: 5,
            timeouts_per_mille: 10,
            max_latency_ns: 10_000,
            max_think_ns: 2_000,
            timeout_ns: 30_000,
        }
    }
}

/// One operation before it is executed.
struct Planned {
    op: HistoryOp,
    /// When it takes effect; `None`: never (a timed-out write that was lost).
    effect_ns: Option<u64>,
}

/// A linearizable history, sorted by call time: 40% `get`, 15% `put`, 30% `append`, 10% `cas`
/// (half of them expecting the key's current value), 5% `delete`. Written values are unique
/// (`c<client>.<n>;`), so a read tells which writes it saw.
pub fn linearizable_history(options: &GenerateOptions) -> Vec<HistoryOp> {
    assert!(
        options.clients > 0 && options.keys > 0,
        "no clients or no keys"
    );
    assert!(options.max_latency_ns > 0 && options.timeout_ns > 0);
    let mut rng = Rng::stream(options.seed, "linearizability-history");
    let mut free_at_ns = vec![0u64; options.clients as usize];
    let mut planned = Vec::with_capacity(options.ops);
    for n in 0..options.ops {
        // The client that is free first calls next, so clients interleave as in a real run.
        let client = (0..free_at_ns.len())
            .min_by_key(|&c| (free_at_ns[c], c))
            .expect("at least one client");
        let call_ns = free_at_ns[client] + rng.range(0, options.max_think_ns + 1);
        let key = format!("k{}", rng.index(options.keys));
        let value = format!("c{client}.{n};");
        let op = plan(&mut rng, client as u64, &key, &value, call_ns, options);
        free_at_ns[client] = op.op.return_ns;
        planned.push(op);
    }
    execute(&mut rng, &mut planned);
    let mut ops: Vec<HistoryOp> = planned.into_iter().map(|p| p.op).collect();
    ops.sort_by_key(|op| (op.call_ns, op.client));
    ops
}

fn plan(
    rng: &mut Rng,
    client: u64,
    key: &str,
    value: &str,
    call_ns: u64,
    options: &GenerateOptions,
) -> Planned {
    let roll = rng.range(0, 100);
    let kind = match roll {
        0..40 => OpKind::Get,
        40..55 => OpKind::Put,
        55..85 => OpKind::Append,
        85..95 => OpKind::Cas,
        _ => OpKind::Delete,
    };
    let timed_out = rng.chance(options.timeouts_per_mille, 1000);
    let return_ns = call_ns
        + if timed_out {
            options.timeout_ns
        } else {
            rng.range(1, options.max_latency_ns + 1)
        };
    let effect_ns = rng.range(call_ns, return_ns + 1);
    let lost = timed_out && rng.chance(1, 2);
    let op = HistoryOp {
        client,
        op: kind,
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: matches!(kind, OpKind::Put | OpKind::Append | OpKind::Cas)
            .then(|| Bytes::copy_from_slice(value.as_bytes())),
        expected: None,
        output: None,
        ok: (!timed_out).then_some(true),
        call_ns,
        return_ns,
    };
    Planned {
        op,
        effect_ns: (!lost).then_some(effect_ns),
    }
}

/// Runs the planned operations in the order of their effect instants on a sequential store and
/// records what each saw.
fn execute(rng: &mut Rng, planned: &mut [Planned]) {
    let mut order: Vec<usize> = (0..planned.len())
        .filter(|&i| planned[i].effect_ns.is_some())
        .collect();
    order.sort_by_key(|&i| (planned[i].effect_ns, i));
    let mut store: BTreeMap<Bytes, Bytes> = BTreeMap::new();
    // Lost writes still choose what a cas expects, the same way, so that a cas's `expected`
    // does not tell whether it was lost.
    for (i, planned) in planned.iter_mut().enumerate() {
        if planned.effect_ns.is_none() && planned.op.op == OpKind::Cas {
            planned.op.expected = rng.chance(1, 2).then(|| Bytes::from(format!("lost{i}")));
        }
    }
    for i in order {
        let op = &mut planned[i].op;
        let current = store.get(&op.key).cloned();
        let known = op.ok.is_some();
        match op.op {
            OpKind::Get => op.output = current.filter(|_| known),
            OpKind::Put => {
                store.insert(op.key.clone(), op.value.clone().expect("a put's value"));
            }
            OpKind::Append => {
                let suffix = op.value.as_ref().expect("an append's value");
                let mut value = BytesMut::from(current.as_deref().unwrap_or_default());
                value.extend_from_slice(suffix);
                store.insert(op.key.clone(), value.freeze());
            }
            OpKind::Delete => {
                store.remove(&op.key);
            }
            OpKind::Cas => {
                op.expected = if rng.chance(1, 2) {
                    current.clone()
                } else {
                    Some(Bytes::from(format!("other{i}")))
                };
                if op.expected == current {
                    store.insert(op.key.clone(), op.value.clone().expect("a cas's value"));
                } else if known {
                    op.ok = Some(false);
                    op.output = current;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Generated histories are valid, sorted by call, and the same for the same seed.
    #[test]
    fn histories_are_valid_and_deterministic() {
        let options = GenerateOptions {
            ops: 2000,
            timeouts_per_mille: 50,
            ..GenerateOptions::default()
        };
        let history = linearizable_history(&options);
        assert_eq!(history.len(), 2000);
        for op in &history {
            op.validate().unwrap();
        }
        assert!(history.windows(2).all(|w| w[0].call_ns <= w[1].call_ns));
        assert_eq!(history, linearizable_history(&options));
        let unknown = history.iter().filter(|op| op.ok.is_none()).count();
        assert!((50..=200).contains(&unknown), "{unknown} timeouts");
        let failed_cas = history.iter().filter(|op| op.ok == Some(false)).count();
        assert!(failed_cas > 20, "{failed_cas} failed cas");
    }
}
