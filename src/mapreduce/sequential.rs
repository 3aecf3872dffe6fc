//! The sequential reference (the lab's `mrsequential`): one map per input, one partition,
//! one reduce, in this thread. Tests compare every distributed run against it; `shardcore mr
//! sequential` runs it from the command line.

use super::apps::{App, AppError, Emitter, TaskContext};
use super::task::{read_split, TaskError};

/// Runs `app` over in-memory documents `(name, contents)`; returns the output lines in key order.
pub fn run_in_memory(app: &dyn App, docs: &[(&str, &[u8])]) -> Result<String, AppError> {
    let mut emit = Emitter::new(1);
    for (index, (name, contents)) in docs.iter().enumerate() {
        let ctx = context(name, index);
        let mut mapper = app.mapper(&ctx)?;
        mapper.map_chunk(contents, 0, &mut emit)?;
        mapper.finish(&mut emit)?;
    }
    reduce_all(app, emit)
}

/// Runs `app` over input files, each read whole; returns the output lines in key order.
pub fn run_files(app: &dyn App, files: &[String]) -> Result<String, String> {
    let mut emit = Emitter::new(1);
    for (index, file) in files.iter().enumerate() {
        let ctx = context(file, index);
        let mut mapper = app.mapper(&ctx).map_err(|e| e.0)?;
        read_split(file, 0, u64::MAX / 2, |chunk, offset| {
            mapper.map_chunk(chunk, offset, &mut emit)
        })
        .map_err(|e| match e {
            TaskError::Failed(reason) | TaskError::MapOutputLost { reason, .. } => reason,
        })?;
        mapper.finish(&mut emit).map_err(|e| e.0)?;
    }
    reduce_all(app, emit).map_err(|e| e.0)
}

fn context(file: &str, index: usize) -> TaskContext {
    TaskContext {
        file: file.to_string(),
        kind: "map",
        task: index as u32,
        ..TaskContext::default()
    }
}

fn reduce_all(app: &dyn App, emit: Emitter) -> Result<String, AppError> {
    let partitions = emit.into_partitions(app);
    let records = &partitions[0];
    let ctx = TaskContext {
        kind: "reduce",
        ..TaskContext::default()
    };
    let mut reducer = app.reducer(&ctx)?;
    let mut out = Vec::new();
    let mut i = 0;
    while i < records.len() {
        let key = &records[i].0;
        let mut values: Vec<&[u8]> = Vec::new();
        while i < records.len() && &records[i].0 == key {
            values.push(&records[i].1);
            i += 1;
        }
        reducer.reduce(key, &values, &mut out)?;
    }
    reducer.finish(&mut out)?;
    String::from_utf8(out).map_err(|_| AppError("the output is not UTF-8".to_string()))
}
