//! Operation histories, one JSON line per completed operation: the format, its reader and its
//! writer live in [`shardcore::history`] (documented there: fields, UTF-8 or base64-tagged keys
//! and values, what each operation and outcome means), next to the checker that reads them,
//! [`shardcore::linearizability`]. The load generator writes `--history` through them; this
//! module re-exports them so its code says `shardcore_bench::history` as before.

pub use shardcore::history::*;

#[cfg(test)]
mod tests {
    use super::*;

    /// What the load generator will write reads back through the re-export as the same
    /// operations, and the checker accepts a sequential history written this way.
    #[test]
    fn written_history_reads_back_and_checks() {
        let ops = [
            HistoryOp::append(3, "k42", "x", 1000, 2500),
            HistoryOp::get(4, "k42", Some("x"), 2600, 2700),
        ];
        let mut writer = HistoryWriter::new(Vec::new());
        for op in &ops {
            writer.record(op).unwrap();
        }
        assert_eq!(writer.ops(), 2);
        let bytes = writer.finish().unwrap();
        assert_eq!(read_all(&bytes[..]).unwrap(), ops);
        assert!(shardcore::linearizability::check_history(&ops)
            .verdict
            .is_linearizable());
    }
}
