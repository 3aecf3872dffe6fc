//! The linearizability checker (`shardcore::linearizability`) on key/value histories:
//! hand-made histories it must accept and reject, an exact cross-check against an exhaustive
//! search on thousands of small random histories, and large generated histories (10,000
//! operations from 15 clients) before and after corrupting one read.
//!
//! Times are in nanoseconds; `HistoryOp::get(client, key, output, call, return)` and friends
//! build one operation each.

use bytes::Bytes;
use shardcore::history::{HistoryOp, OpKind};
use shardcore::linearizability::generate::{linearizable_history, GenerateOptions};
use shardcore::linearizability::{
    check_history, check_history_with, CheckOptions, Report, Verdict, Violation,
};
use shardcore::rng::Rng;

type Op = HistoryOp;

fn accepts(history: &[Op]) {
    let report = check_history(history);
    assert!(
        report.verdict.is_linearizable(),
        "rejected:\n{report}\n{history:#?}"
    );
}

/// The violation, after checking the history is rejected (not undecided) for `key`.
fn rejects(history: &[Op], key: &str) -> Violation<Bytes> {
    let report = check_history(history);
    match report.verdict {
        Verdict::NotLinearizable(violation) => {
            assert_eq!(violation.key, key, "{violation}");
            *violation
        }
        verdict => panic!("not rejected: {verdict}\n{history:#?}"),
    }
}

#[test]
fn sequential_histories() {
    // One client, one operation at a time: a correct run is accepted, and each wrong answer,
    // alone, is rejected, naming the read that could not be placed.
    let good = vec![
        Op::get(1, "k", None, 0, 1),
        Op::put(1, "k", "x", 2, 3),
        Op::get(1, "k", Some("x"), 4, 5),
        Op::append(1, "k", "y", 6, 7),
        Op::get(1, "k", Some("xy"), 8, 9),
        Op::delete(1, "k", 10, 11),
        Op::get(1, "k", None, 12, 13),
        Op::append(1, "k", "z", 14, 15),
        Op::get(1, "k", Some("z"), 16, 17),
    ];
    accepts(&good);
    accepts(&[]);
    for (read, wrong) in [
        (0, Some("x")),
        (2, None),
        (4, Some("x")),
        (6, Some("xy")),
        (8, Some("xyz")),
    ] {
        let mut bad = good.clone();
        bad[read].output = wrong.map(Bytes::from);
        let violation = rejects(&bad, "k");
        assert_eq!(violation.blocked.index, read, "{violation}");
    }
}

#[test]
fn concurrent_put_and_get_may_see_either_value() {
    // A get concurrent with a put may read the old value or the new one, but nothing else.
    for output in [Some("x"), Some("y")] {
        accepts(&[
            Op::put(1, "k", "x", 0, 10),
            Op::put(2, "k", "y", 20, 40),
            Op::get(3, "k", output, 25, 35),
        ]);
    }
    for output in [None, Some("z")] {
        rejects(
            &[
                Op::put(1, "k", "x", 0, 10),
                Op::put(2, "k", "y", 20, 40),
                Op::get(3, "k", output, 25, 35),
            ],
            "k",
        );
    }
    // Two reads during one write may disagree, but once one read saw the new value a later
    // read (called after it returned) must too.
    accepts(&[
        Op::put(1, "k", "x", 0, 100),
        Op::get(2, "k", Some("x"), 10, 20),
        Op::get(3, "k", None, 5, 50),
    ]);
    rejects(
        &[
            Op::put(1, "k", "x", 0, 100),
            Op::get(2, "k", Some("x"), 10, 20),
            Op::get(3, "k", None, 30, 50),
        ],
        "k",
    );
}

#[test]
fn stale_read_after_completed_write_is_rejected() {
    // The write of "y" returned before the read was called, so reading "x" (or absent) is stale.
    for stale in [Some("x"), None] {
        let violation = rejects(
            &[
                Op::put(1, "k", "x", 0, 10),
                Op::put(1, "k", "y", 20, 30),
                Op::get(2, "k", stale, 40, 50),
            ],
            "k",
        );
        assert_eq!(violation.blocked.index, 2);
    }
    let violation = rejects(
        &[
            Op::put(1, "k", "x", 0, 10),
            Op::put(1, "k", "y", 20, 30),
            Op::get(2, "k", Some("x"), 40, 50),
        ],
        "k",
    );
    assert_eq!(violation.prefix, [0, 1]);
    assert_eq!(violation.state, "\"y\"");
}

#[test]
fn read_of_a_value_never_written_is_rejected() {
    // "q" was never written by anyone, concurrent or not.
    let violation = rejects(
        &[
            Op::put(1, "k", "x", 0, 10),
            Op::put(2, "k", "y", 5, 15),
            Op::get(3, "k", Some("q"), 0, 20),
        ],
        "k",
    );
    assert_eq!(violation.blocked.index, 2);
    assert!(violation.to_string().contains("get → \"q\""), "{violation}");
}

#[test]
fn appends_follow_real_time() {
    // Append "a" returned before append "b" was called: a later read sees "ab", never "ba" or a
    // value missing "a".
    let sequential = |read: &str| {
        vec![
            Op::append(1, "k", "a", 0, 10),
            Op::append(2, "k", "b", 20, 30),
            Op::get(3, "k", Some(read), 40, 50),
        ]
    };
    accepts(&sequential("ab"));
    rejects(&sequential("ba"), "k");
    rejects(&sequential("b"), "k");
    // Concurrent appends may land in either order, but every reader sees the same order.
    let concurrent = |first: &str, second: &str| {
        vec![
            Op::append(1, "k", "a", 0, 10),
            Op::append(2, "k", "b", 5, 15),
            Op::get(3, "k", Some(first), 20, 30),
            Op::get(4, "k", Some(second), 40, 50),
        ]
    };
    accepts(&concurrent("ab", "ab"));
    accepts(&concurrent("ba", "ba"));
    rejects(&concurrent("ab", "ba"), "k");
    // A read during the appends may see a prefix of the final order only.
    accepts(&[
        Op::append(1, "k", "a", 0, 10),
        Op::append(2, "k", "b", 5, 15),
        Op::get(3, "k", Some("b"), 6, 8),
        Op::get(4, "k", Some("ba"), 20, 30),
    ]);
    rejects(
        &[
            Op::append(1, "k", "a", 0, 10),
            Op::append(2, "k", "b", 5, 15),
            Op::get(3, "k", Some("b"), 6, 8),
            Op::get(4, "k", Some("ab"), 20, 30),
        ],
        "k",
    );
}

#[test]
fn compare_and_set() {
    // A cas swaps exactly when the key holds what it expects (absent included), and a failed
    // cas must have found a value other than the expected one: the value the key held then.
    accepts(&[
        Op::cas_ok(1, "k", None, "x", 0, 10),
        Op::cas_failed(1, "k", None, "y", Some("x"), 20, 30),
        Op::cas_ok(1, "k", Some("x"), "y", 40, 50),
        Op::get(1, "k", Some("y"), 60, 70),
        Op::cas_failed(1, "k", Some("x"), "z", Some("y"), 80, 90),
    ]);
    // Swapped from absent while the key held "x".
    rejects(
        &[
            Op::put(1, "k", "x", 0, 10),
            Op::cas_ok(1, "k", None, "y", 20, 30),
        ],
        "k",
    );
    // Failed while the key held exactly what it expected.
    rejects(
        &[
            Op::put(1, "k", "x", 0, 10),
            Op::cas_failed(1, "k", Some("x"), "y", Some("x"), 20, 30),
        ],
        "k",
    );
    // Failed, reporting a value the key did not hold.
    rejects(
        &[
            Op::put(1, "k", "x", 0, 10),
            Op::cas_failed(1, "k", Some("w"), "y", Some("v"), 20, 30),
        ],
        "k",
    );
    // A read after a successful cas must see its value.
    rejects(
        &[
            Op::put(1, "k", "x", 0, 10),
            Op::cas_ok(2, "k", Some("x"), "y", 20, 30),
            Op::get(3, "k", Some("x"), 40, 50),
        ],
        "k",
    );
    // Two concurrent cas from the same value cannot both swap ...
    rejects(
        &[
            Op::put(1, "k", "x", 0, 10),
            Op::cas_ok(2, "k", Some("x"), "y", 20, 30),
            Op::cas_ok(3, "k", Some("x"), "z", 20, 30),
        ],
        "k",
    );
    // ... but one may swap and the other find its value.
    accepts(&[
        Op::put(1, "k", "x", 0, 10),
        Op::cas_ok(2, "k", Some("x"), "y", 20, 30),
        Op::cas_failed(3, "k", Some("x"), "z", Some("y"), 20, 30),
    ]);
}

#[test]
fn delete() {
    // After a completed delete the key reads absent; a concurrent read may see either; a delete
    // that never happened must not be seen.
    accepts(&[
        Op::put(1, "k", "x", 0, 10),
        Op::delete(1, "k", 20, 30),
        Op::get(2, "k", None, 40, 50),
        Op::append(2, "k", "y", 60, 70),
        Op::get(2, "k", Some("y"), 80, 90),
    ]);
    rejects(
        &[
            Op::put(1, "k", "x", 0, 10),
            Op::delete(1, "k", 20, 30),
            Op::get(2, "k", Some("x"), 40, 50),
        ],
        "k",
    );
    for output in [Some("x"), None] {
        accepts(&[
            Op::put(1, "k", "x", 0, 10),
            Op::delete(1, "k", 20, 30),
            Op::get(2, "k", output, 25, 35),
        ]);
    }
    // Deleting and re-creating: absent, then a cas from absent.
    accepts(&[
        Op::put(1, "k", "x", 0, 10),
        Op::delete(1, "k", 20, 30),
        Op::cas_ok(1, "k", None, "y", 40, 50),
        Op::get(1, "k", Some("y"), 60, 70),
    ]);
}

#[test]
fn unknown_outcomes() {
    // A timed-out write may take effect any time after its call (even after its client gave
    // up) or never; a timed-out read observed nothing; a write the server refused never happens.
    let shows_up_later = [
        Op::put(1, "k", "x", 0, 10).timed_out(20),
        Op::get(2, "k", None, 30, 40),
        Op::get(2, "k", Some("x"), 50, 60),
        Op::get(2, "k", Some("x"), 70, 80),
    ];
    accepts(&shows_up_later);
    let never_shows_up = [
        Op::put(1, "k", "x", 0, 10).timed_out(20),
        Op::get(2, "k", None, 30, 40),
        Op::put(2, "k", "y", 50, 60),
        Op::get(2, "k", Some("y"), 70, 80),
    ];
    accepts(&never_shows_up);
    // Seen before it was called: impossible.
    rejects(
        &[
            Op::get(2, "k", Some("x"), 0, 5),
            Op::put(1, "k", "x", 10, 20).timed_out(30),
        ],
        "k",
    );
    // Once seen, it cannot un-happen.
    rejects(
        &[
            Op::put(1, "k", "x", 0, 10).timed_out(20),
            Op::get(2, "k", Some("x"), 30, 40),
            Op::get(2, "k", None, 50, 60),
        ],
        "k",
    );
    // A timed-out append seen by one read must be in every later one.
    accepts(&[
        Op::append(1, "k", "a", 0, 1).timed_out(5),
        Op::append(2, "k", "b", 10, 20),
        Op::get(3, "k", Some("ba"), 30, 40),
    ]);
    // A timed-out read with no answer is ignored, and so are refused writes ...
    let mut refused = Op::put(3, "k", "z", 0, 10);
    refused.ok = Some(false);
    let report = check_history(&[
        Op::get(1, "k", None, 0, 10).timed_out(100),
        refused.clone(),
        Op::get(2, "k", None, 20, 30),
    ]);
    assert!(report.verdict.is_linearizable(), "{report}");
    assert_eq!(report.ignored, 2);
    // ... so a refused write that shows up is a violation.
    rejects(&[refused, Op::get(2, "k", Some("z"), 20, 30)], "k");
    // A timed-out cas swaps only if the key holds what it expects when it takes effect.
    accepts(&[
        Op::put(1, "k", "x", 0, 10),
        Op::cas_ok(1, "k", Some("x"), "y", 20, 30).timed_out(40),
        Op::get(2, "k", Some("y"), 50, 60),
    ]);
    rejects(
        &[
            Op::put(1, "k", "x", 0, 10),
            Op::cas_ok(1, "k", Some("w"), "y", 20, 30).timed_out(40),
            Op::get(2, "k", Some("y"), 50, 60),
        ],
        "k",
    );
}

#[test]
fn unseen_appends_of_unknown_outcome_are_left_out() {
    // Three clients append in turns and a fourth reads everything after each round; twelve
    // more appends time out and no read ever shows them (a paused leader that never committed
    // them). Each could take effect last, so the checker leaves them out (counted as ignored)
    // rather than trying them at every point after their calls.
    let mut history = Vec::new();
    let mut seen = String::new();
    for round in 0..40u64 {
        let t = round * 100;
        for client in 1..=3u64 {
            let value = format!("c{client}.{round};");
            history.push(Op::append(client, "k", &value, t, t + 10));
            seen.push_str(&value);
        }
        if round % 3 == 0 {
            let value = format!("lost{round};");
            history.push(Op::append(5, "k", &value, t, t + 5).timed_out(t + 50));
        }
        history.push(Op::get(4, "k", Some(&seen), t + 20, t + 30));
    }
    let lost = 14;
    let report = check_history(&history);
    assert!(report.verdict.is_linearizable(), "{report}");
    assert_eq!(report.ignored, lost, "{report}");
    // One of them seen by the last read is checked: it must fit where the read saw it.
    let last = history.len() - 1;
    let mut shown = seen.clone();
    shown.push_str("lost39;");
    history[last].output = Some(Bytes::from(shown));
    let report = check_history(&history);
    assert!(report.verdict.is_linearizable(), "{report}");
    assert_eq!(report.ignored, lost - 1, "{report}");
    // Seen before appends that returned before it was called: no order gives that.
    let misplaced = seen.replacen("c1.0;", "c1.0;lost39;", 1);
    history[last].output = Some(Bytes::from(misplaced));
    rejects(&history, "k");
    // A stale read is still found with them left out, and reported by its place in the
    // whole history.
    history[last].output = Some(Bytes::from(seen[..seen.len() - 1].to_string()));
    assert_eq!(rejects(&history, "k").blocked.index, last);
    // On a key with a compare-and-set they are kept (a failing one could be explained by one).
    history[last].output = Some(Bytes::from(seen.clone()));
    history.push(Op::cas_failed(
        4,
        "k",
        Some("x"),
        "y",
        Some(&seen),
        5_000,
        5_010,
    ));
    let report = check_history(&history);
    assert!(report.verdict.is_linearizable(), "{report}");
    assert_eq!(report.ignored, 0, "{report}");
}

#[test]
fn only_the_bad_key_is_reported() {
    // Keys are checked apart: "good" is fine, "bad" has a stale read, and the report names
    // "bad", its operations by their index in the whole history, and none of "good"'s.
    let history = [
        Op::put(1, "good", "1", 0, 10),
        Op::put(2, "bad", "x", 0, 10),
        Op::get(1, "good", Some("1"), 20, 30),
        Op::put(2, "bad", "y", 20, 30),
        Op::get(3, "bad", Some("x"), 40, 50),
        Op::get(3, "good", Some("1"), 40, 50),
    ];
    let violation = rejects(&history, "bad");
    assert_eq!(violation.prefix, [1, 3]);
    assert_eq!(violation.blocked.index, 4);
    assert_eq!(violation.blocked.client, 3);
    let text = violation.to_string();
    assert!(text.starts_with("not linearizable: key \"bad\""), "{text}");
    assert!(
        text.contains("#4 client 3 [40 ns, 50 ns] get → \"x\""),
        "{text}"
    );
    assert!(!text.contains("\"1\""), "{text}");
    // The same history with the bad read fixed passes.
    let mut fixed = history.to_vec();
    fixed[4].output = Some(Bytes::from("y"));
    accepts(&fixed);
}

#[test]
fn touching_intervals_are_concurrent() {
    // An operation called at the very nanosecond another returns may be ordered before it (as
    // Porcupine does): the clocks cannot tell which came first.
    accepts(&[Op::put(1, "k", "x", 0, 10), Op::get(2, "k", None, 10, 20)]);
    rejects(
        &[Op::put(1, "k", "x", 0, 10), Op::get(2, "k", None, 11, 20)],
        "k",
    );
}

#[test]
fn the_report_names_the_operations_involved() {
    // The violation gives the longest linearizable order found (its end described), the state
    // after it, the operation that cannot follow, and the operations still open then.
    let history = [
        Op::put(1, "k", "x", 0, 10),
        Op::append(2, "k", "1", 20, 30),
        Op::append(3, "k", "2", 40, 100),
        Op::get(4, "k", Some("x2"), 50, 60),
    ];
    let violation = rejects(&history, "k");
    // Appends stay unordered until observed, so both are placed before the read that cannot
    // match any order of them ("x" + {"1", "2"} is three bytes long; it read two).
    assert_eq!(violation.prefix, [0, 1, 2]);
    assert_eq!(
        violation.state,
        "\"x\" followed by 2 appends in an order not yet observed"
    );
    assert_eq!(violation.blocked.index, 3);
    assert!(violation.pending.is_empty());
    let text = violation.to_string();
    assert!(
        text.contains("after it the key holds \"x\" followed by 2 appends"),
        "{text}"
    );
    assert!(
        text.contains("#3 client 4 [50 ns, 60 ns] get → \"x2\""),
        "{text}"
    );
    assert!(
        text.contains("#2 client 3 [40 ns, 100 ns] append \"2\""),
        "{text}"
    );
    // A read of "q", which nothing writes, is found out before anything is placed.
    let history = [
        Op::put(1, "k", "x", 0, 10),
        Op::get(2, "k", Some("y"), 20, 100),
        Op::get(3, "k", Some("q"), 30, 40),
        Op::put(4, "k", "y", 90, 95),
    ];
    let violation = rejects(&history, "k");
    assert!(violation.prefix.is_empty());
    assert_eq!(violation.state, "absent");
    assert_eq!(violation.blocked.index, 2);
    let pending: Vec<usize> = violation.pending.iter().map(|op| op.index).collect();
    assert_eq!(pending, [0, 1]);
}

#[test]
fn undecided_is_not_a_pass() {
    // With a budget too small to finish, the verdict is Undecided (never Linearizable), it names
    // the key, and says so; a violation on another key still wins over it.
    let history = linearizable_history(&GenerateOptions {
        ops: 200,
        keys: 2,
        ..GenerateOptions::default()
    });
    let tight = CheckOptions { max_steps: 50 };
    let report = check_history_with(&history, &tight);
    let Verdict::Undecided(undecided) = &report.verdict else {
        panic!("{report}")
    };
    assert_eq!(undecided.max_steps, 50);
    assert!((50..100).contains(&undecided.steps), "{undecided}");
    assert_eq!(undecided.key, "k0");
    assert_eq!(undecided.partitions, 2);
    assert!(!report.verdict.is_linearizable());
    assert!(report.to_string().contains("undecided"), "{report}");
    let mut with_bad_key = history.clone();
    with_bad_key.push(Op::get(1, "zz", Some("never"), 0, 1));
    let report = check_history_with(&with_bad_key, &tight);
    assert_eq!(
        report.verdict.violation().map(|v| v.key.clone()),
        Some(Bytes::from("zz"))
    );
    // With the default budget the same history is decided.
    assert!(check_history(&history).verdict.is_linearizable());
}

#[test]
fn base64_keys_and_values_are_checked_like_any_other() {
    // Keys and values need not be UTF-8.
    let mut put = Op::put(1, "", "", 0, 10);
    put.key = Bytes::from_static(&[0xff, 0x00]);
    put.value = Some(Bytes::from_static(&[0xfe]));
    let mut get = Op::get(2, "", None, 20, 30);
    get.key = put.key.clone();
    get.output = put.value.clone();
    accepts(&[put.clone(), get.clone()]);
    get.output = Some(Bytes::from_static(&[0xfd]));
    let report = check_history(&[put, get]);
    let violation = report.verdict.violation().expect("rejected");
    assert_eq!(violation.key_name, "base64:/wA=");
}

// ---- Cross-check against an exhaustive search.

/// Linearizable by brute force, written independently of the checker: over the whole history
/// (no partitioning), try every order of the operations that respects real time, where a
/// write with an unknown outcome may also be left out, and ignored operations do not count.
fn brute_force(history: &[Op]) -> bool {
    let ops: Vec<&Op> = history
        .iter()
        .filter(|op| match (op.op, op.ok) {
            (OpKind::Get, ok) => ok == Some(true),
            (OpKind::Cas, _) => true,
            (_, ok) => ok != Some(false),
        })
        .collect();
    assert!(ops.len() <= 16);
    // must_precede[b] has bit a when a returned (for sure) before b was called.
    let must_precede: Vec<u32> = ops
        .iter()
        .map(|b| {
            ops.iter().enumerate().fold(0, |mask, (a, op)| {
                if op.ok.is_some() && op.return_ns < b.call_ns {
                    mask | 1 << a
                } else {
                    mask
                }
            })
        })
        .collect();
    let required: u32 =
        ops.iter().enumerate().fold(
            0,
            |mask, (i, op)| if op.ok.is_some() { mask | 1 << i } else { mask },
        );
    let mut store = Store::new();
    let mut dead = std::collections::HashSet::new();
    explore(&ops, &must_precede, required, 0, &mut store, &mut dead)
}

type Store = std::collections::BTreeMap<Bytes, Bytes>;

/// Depth-first over every next operation allowed; `dead` remembers (placed, store) pairs that
/// led nowhere, so that up to 16 operations stay fast.
fn explore(
    ops: &[&Op],
    must_precede: &[u32],
    required: u32,
    placed: u32,
    store: &mut Store,
    dead: &mut std::collections::HashSet<(u32, Store)>,
) -> bool {
    if placed & required == required {
        return true;
    }
    if dead.contains(&(placed, store.clone())) {
        return false;
    }
    for (i, op) in ops.iter().enumerate() {
        if placed & 1 << i != 0 || must_precede[i] & !placed != 0 {
            continue;
        }
        let before = store.get(&op.key).cloned();
        let legal = match op.op {
            OpKind::Get => before == op.output,
            OpKind::Put => {
                store.insert(op.key.clone(), op.value.clone().unwrap());
                true
            }
            OpKind::Append => {
                let mut value = before.clone().unwrap_or_default().to_vec();
                value.extend_from_slice(op.value.as_ref().unwrap());
                store.insert(op.key.clone(), Bytes::from(value));
                true
            }
            OpKind::Delete => {
                store.remove(&op.key);
                true
            }
            OpKind::Cas => {
                let matches = before == op.expected;
                if matches {
                    store.insert(op.key.clone(), op.value.clone().unwrap());
                }
                match op.ok {
                    Some(true) => matches,
                    Some(false) => !matches && before == op.output,
                    None => true,
                }
            }
        };
        if legal && explore(ops, must_precede, required, placed | 1 << i, store, dead) {
            return true;
        }
        match before {
            Some(value) => store.insert(op.key.clone(), value),
            None => store.remove(&op.key),
        };
    }
    dead.insert((placed, store.clone()));
    false
}

/// A small random history: up to 8 operations on one or two keys, values from a tiny alphabet
/// so that reads often match, random overlapping intervals with ties, a few unknown and
/// refused outcomes; outputs either drawn at random or taken from a random sequential run
/// (then sometimes perturbed), so that both verdicts are common.
fn small_history(rng: &mut Rng) -> Vec<Op> {
    const VALUES: [&str; 3] = ["x", "y", "z"];
    const READS: [Option<&str>; 7] = [
        None,
        Some("x"),
        Some("y"),
        Some("xy"),
        Some("yx"),
        Some("z"),
        Some("xx"),
    ];
    let len = rng.range(1, 9) as usize;
    let keys = rng.range(1, 3);
    let mut ops = Vec::new();
    for client in 0..len as u64 {
        let key = ["a", "b"][rng.index(keys as usize)];
        let call = rng.range(0, 12);
        let ret = call + rng.range(0, 6);
        let value = VALUES[rng.index(3)];
        let expected = [None, Some("x"), Some("y")][rng.index(3)];
        let mut op = match rng.range(0, 10) {
            0..4 => Op::get(client, key, READS[rng.index(READS.len())], call, ret),
            4..6 => Op::put(client, key, value, call, ret),
            6..8 => Op::append(client, key, value, call, ret),
            8 => Op::delete(client, key, call, ret),
            _ if rng.chance(1, 2) => Op::cas_ok(client, key, expected, value, call, ret),
            _ => Op::cas_failed(
                client,
                key,
                expected,
                value,
                READS[rng.index(READS.len())],
                call,
                ret,
            ),
        };
        if rng.chance(1, 10) {
            op = op.timed_out(ret);
        } else if rng.chance(1, 20) && op.op != OpKind::Cas {
            op.ok = Some(false);
            op.output = None;
        }
        ops.push(op);
    }
    if rng.chance(1, 2) {
        run_sequentially(rng, &mut ops);
        if rng.chance(1, 2) {
            let i = rng.index(ops.len());
            if ops[i].op == OpKind::Get && ops[i].ok == Some(true) {
                ops[i].output = READS[rng.index(READS.len())].map(Bytes::from);
            }
        }
    }
    ops
}

/// Makes the outputs those of a run where each operation took effect at a random instant inside
/// its interval (so the history is linearizable unless perturbed afterwards).
fn run_sequentially(rng: &mut Rng, ops: &mut [Op]) {
    let mut order: Vec<(u64, usize)> = ops
        .iter()
        .enumerate()
        .map(|(i, op)| {
            (
                op.call_ns * 2 + rng.range(0, 2 * (op.return_ns - op.call_ns) + 1),
                i,
            )
        })
        .collect();
    order.sort();
    let mut store = std::collections::BTreeMap::<Bytes, Bytes>::new();
    for (_, i) in order {
        let op = &mut ops[i];
        let current = store.get(&op.key).cloned();
        let happens = op.ok != Some(false) || op.op == OpKind::Cas;
        match op.op {
            OpKind::Get if op.ok == Some(true) => op.output = current,
            OpKind::Get => {}
            _ if !happens => {}
            OpKind::Put => {
                store.insert(op.key.clone(), op.value.clone().unwrap());
            }
            OpKind::Append => {
                let mut value = current.unwrap_or_default().to_vec();
                value.extend_from_slice(op.value.as_ref().unwrap());
                store.insert(op.key.clone(), Bytes::from(value));
            }
            OpKind::Delete => {
                store.remove(&op.key);
            }
            OpKind::Cas => {
                if op.expected == current {
                    store.insert(op.key.clone(), op.value.clone().unwrap());
                    if op.ok.is_some() {
                        (op.ok, op.output) = (Some(true), None);
                    }
                } else if op.ok.is_some() {
                    (op.ok, op.output) = (Some(false), current);
                }
            }
        }
    }
}

#[test]
fn agrees_with_brute_force_on_small_histories() {
    // 20,000 random histories of at most 8 operations (seeded, replayable): the checker's verdict
    // equals the exhaustive search's on every one, it is never undecided, and both verdicts
    // occur often enough for the comparison to mean something.
    let mut rng = Rng::stream(7, "brute-force-cross-check");
    let (mut accepted, mut rejected) = (0, 0);
    for case in 0..20_000 {
        let history = small_history(&mut rng);
        for op in &history {
            op.validate()
                .unwrap_or_else(|e| panic!("case {case}: {e}: {op:?}"));
        }
        let expected = brute_force(&history);
        let report = check_history(&history);
        let verdict = match report.verdict {
            Verdict::Linearizable => true,
            Verdict::NotLinearizable(_) => false,
            Verdict::Undecided(_) => panic!("case {case}: undecided\n{history:#?}"),
        };
        assert_eq!(
            verdict, expected,
            "case {case}: checker says {verdict}, brute force {expected}\n{report}\n{history:#?}"
        );
        if expected {
            accepted += 1;
        } else {
            rejected += 1;
        }
    }
    println!("{accepted} linearizable, {rejected} not");
    assert!(
        accepted > 5_000 && rejected > 5_000,
        "{accepted} / {rejected}"
    );
}

/// A medium random history on one key, mostly appends of one-letter values (with some puts,
/// deletes and compare-and-sets) and reads of what a random run produced (sometimes with two letters swapped, or one dropped): up to 14
/// operations, heavily overlapping, so that the search's pruning by reads
/// (`Model::can_become_legal`) is exercised where orders of appends are ambiguous.
fn append_history(rng: &mut Rng) -> Vec<Op> {
    let len = rng.range(6, 15) as usize;
    let mut ops = Vec::new();
    for client in 0..len as u64 {
        let call = rng.range(0, 30);
        let ret = call + rng.range(0, 15);
        // Letters repeat now and then, so that splits of a read into appends are ambiguous.
        let letter = ["a", "b", "c", "d", "e", "f", "g", "a", "b"][rng.index(9)];
        let expected = [None, Some("a"), Some("ab"), Some("b")][rng.index(4)];
        let mut op = match rng.range(0, 12) {
            0..4 => Op::get(client, "k", None, call, ret),
            4..8 => Op::append(client, "k", letter, call, ret),
            8 => Op::put(client, "k", letter, call, ret),
            9 => Op::delete(client, "k", call, ret),
            _ => Op::cas_ok(client, "k", expected, letter, call, ret),
        };
        if rng.chance(1, 12) {
            op = op.timed_out(ret);
        }
        ops.push(op);
    }
    run_sequentially(rng, &mut ops);
    let long_reads: Vec<usize> = (0..ops.len())
        .filter(|&i| {
            ops[i].op == OpKind::Get && ops[i].output.as_ref().is_some_and(|o| o.len() >= 2)
        })
        .collect();
    if !long_reads.is_empty() && rng.chance(2, 3) {
        let i = long_reads[rng.index(long_reads.len())];
        if let Some(output) = ops[i].output.clone() {
            let mut bytes = output.to_vec();
            if rng.chance(1, 2) {
                let at = rng.index(bytes.len() - 1);
                bytes.swap(at, at + 1);
            } else {
                bytes.remove(rng.index(bytes.len()));
            }
            ops[i].output = Some(Bytes::from(bytes));
        }
    }
    ops
}

#[test]
fn agrees_with_brute_force_on_append_heavy_histories() {
    // 5,000 random histories of 6 to 14 overlapping operations on one key, mostly appends and
    // reads (seeded): the checker agrees with the exhaustive search on every one.
    let mut rng = Rng::stream(11, "append-cross-check");
    let (mut accepted, mut rejected) = (0, 0);
    for case in 0..5_000 {
        let history = append_history(&mut rng);
        let expected = brute_force(&history);
        let report = check_history(&history);
        assert!(
            !matches!(report.verdict, Verdict::Undecided(_)),
            "case {case}: {report}"
        );
        assert_eq!(
            report.verdict.is_linearizable(),
            expected,
            "case {case}: brute force says {expected}\n{report}\n{history:#?}"
        );
        if expected {
            accepted += 1;
        } else {
            rejected += 1;
        }
    }
    println!("{accepted} linearizable, {rejected} not");
    assert!(
        accepted > 1_500 && rejected > 800,
        "{accepted} / {rejected}"
    );
}

// ---- Large generated histories.

fn large_history(seed: u64) -> Vec<Op> {
    linearizable_history(&GenerateOptions {
        seed,
        ops: 10_000,
        clients: 15,
        keys: 5,
        ..GenerateOptions::default()
    })
}

fn decided(report: &Report) -> &Verdict {
    assert!(
        !matches!(report.verdict, Verdict::Undecided(_)),
        "undecided: {report}"
    );
    &report.verdict
}

#[test]
fn large_linearizable_histories_are_accepted() {
    // 10,000 operations from 15 clients on 5 keys, each taking effect at a random instant inside
    // its interval, 1% with unknown outcomes: linearizable by construction, and the checker
    // says so (for three seeds).
    for seed in 1..=3 {
        let history = large_history(seed);
        let report = check_history(&history);
        assert!(decided(&report).is_linearizable(), "seed {seed}: {report}");
        assert_eq!(report.partitions, 5);
        println!("seed {seed}: {report}");
    }
}

#[test]
fn one_corrupted_read_in_a_large_history_is_found() {
    // The same histories with one successful read's output changed to a value never written:
    // not linearizable, naming that read's key and that read as the operation that cannot be
    // placed.
    for seed in 1..=3 {
        let mut history = large_history(seed);
        let mut rng = Rng::stream(seed, "corrupt");
        let target = loop {
            let i = rng.index(history.len());
            if history[i].op == OpKind::Get && history[i].ok == Some(true) {
                break i;
            }
        };
        history[target].output = Some(Bytes::from("corrupted"));
        let report = check_history(&history);
        let violation = decided(&report)
            .violation()
            .unwrap_or_else(|| panic!("{report}"));
        assert_eq!(
            violation.key, history[target].key,
            "seed {seed}: {violation}"
        );
        assert_eq!(violation.blocked.index, target, "seed {seed}: {violation}");
    }
}

#[test]
fn single_key_high_contention_is_decided() {
    // 10,000 operations from 15 clients on one key (about 13 in flight at once), 5% of them
    // timing out: still decided, and linearizable.
    let history = linearizable_history(&GenerateOptions {
        seed: 11,
        ops: 10_000,
        clients: 15,
        keys: 1,
        timeouts_per_mille: 50,
        ..GenerateOptions::default()
    });
    let report = check_history(&history);
    assert!(decided(&report).is_linearizable(), "{report}");
    println!("{report}");
}
