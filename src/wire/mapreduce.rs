//! MapReduce messages (`FrameKind::MapReduce`): the coordinator's task assignments, the workers'
//! requests, heartbeats and reports, and the fetch of map outputs between workers. [`MrMessage`]
//! is the in-memory form; [`Encoder::mapreduce_body`] builds a frame body and
//! [`decode_mapreduce`] verifies one and reads it back, refusing unknown enum values, unknown
//! union variants and fields that do not fit together (a task number outside the job, a reduce
//! without its map locations).

use bytes::Bytes;
use shardcore_protocol::flatbuffers::{FlatBufferBuilder, WIPOffset};
use shardcore_protocol::schema::mapreduce as fb;

use super::{check_estimate, slice_of, DecodeError, EncodeError, Encoder};

/// Map or reduce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TaskKind {
    /// A map task: one split of one input file.
    Map,
    /// A reduce task: one partition of every map's output.
    Reduce,
}

/// The job a task belongs to: everything a worker needs to run its tasks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobSpec {
    /// The job's id; messages about another job are refused.
    pub id: u64,
    /// The app's name (`wc`, `indexer`, `grep`, `exec`).
    pub app: String,
    /// The app's arguments (a pattern, executables).
    pub app_args: Vec<String>,
    /// Map tasks in the job.
    pub map_count: u32,
    /// Reduce tasks (partitions) in the job.
    pub reduce_count: u32,
    /// Intermediate files (when shared) and temporary files.
    pub work_dir: String,
    /// Where `mr-out-<r>` goes.
    pub output_dir: String,
    /// Whether every worker sees `work_dir`; if not, reducers fetch over TCP.
    pub shared_intermediate: bool,
}

/// One split of one input file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapTaskSpec {
    /// The map task's number, below `JobSpec::map_count`.
    pub task: u32,
    /// Which attempt of the task this is (names its output files).
    pub attempt: u32,
    /// The input file.
    pub file: String,
    /// The split's first byte.
    pub offset: u64,
    /// The split's length in bytes.
    pub length: u64,
}

/// Where the accepted output of one map task is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapLocation {
    /// The map task.
    pub map: u32,
    /// The attempt whose output was accepted.
    pub attempt: u32,
    /// The fetch server of the worker core that ran it.
    pub addr: String,
}

/// One partition of every map's output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReduceTaskSpec {
    /// The partition, below `JobSpec::reduce_count`.
    pub task: u32,
    /// Which attempt this is (names its temporary output).
    pub attempt: u32,
    /// Every map's output, one per map task, in map order.
    pub inputs: Vec<MapLocation>,
}

/// What a worker core should do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Assignment {
    /// Run a map task.
    Map(MapTaskSpec),
    /// Run a reduce task.
    Reduce(ReduceTaskSpec),
    /// Nothing is free; ask again after this many milliseconds.
    Wait {
        /// The delay.
        retry_ms: u32,
    },
    /// The job is over.
    Exit {
        /// Whether it failed.
        job_failed: bool,
    },
}

/// The coordinator's answer to a request or a report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskAssignment {
    /// The job (absent only with `Wait` or `Exit` before a job exists).
    pub job: Option<JobSpec>,
    /// The task's lease in milliseconds.
    pub lease_ms: u32,
    /// How often to send heartbeats, in milliseconds.
    pub heartbeat_ms: u32,
    /// The task, or wait, or exit.
    pub assignment: Assignment,
}

/// What a task read and wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Records (lines or key/value pairs) read.
    pub records_in: u64,
    /// Records written.
    pub records_out: u64,
    /// Bytes read.
    pub bytes_in: u64,
    /// Bytes written.
    pub bytes_out: u64,
}

impl Counters {
    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &Counters) {
        self.records_in += other.records_in;
        self.records_out += other.records_out;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
    }
}

/// Names one attempt of one task, as a worker reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TaskRef {
    /// The reporting worker core.
    pub worker: u64,
    /// The job.
    pub job: u64,
    /// Map or reduce.
    pub kind: TaskKind,
    /// The task's number.
    pub task: u32,
    /// The attempt.
    pub attempt: u32,
}

/// Why a task failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// The task failed; counted against its attempts.
    TaskError,
    /// A reducer could not read map `map`'s output; that map runs again.
    MapOutputLost {
        /// The map task.
        map: u32,
    },
}

/// A MapReduce message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MrMessage {
    /// Worker to coordinator: give me a task.
    RequestTask {
        /// The worker core.
        worker: u64,
    },
    /// Coordinator to worker.
    Assignment(TaskAssignment),
    /// Worker to coordinator: a task is done, its outputs in place.
    TaskDone {
        /// Which attempt.
        task: TaskRef,
        /// What it read and wrote.
        counters: Counters,
        /// The fetch server for its outputs.
        fetch_addr: String,
    },
    /// Worker to coordinator: a task failed.
    TaskFailed {
        /// Which attempt.
        task: TaskRef,
        /// Whose fault.
        failure: FailureKind,
        /// Why, for the job report.
        reason: String,
    },
    /// Worker to coordinator: still working.
    Heartbeat {
        /// Which attempt.
        task: TaskRef,
        /// Input bytes processed so far.
        bytes_done: u64,
    },
    /// Reducer to fetch server.
    FetchRequest {
        /// The job.
        job: u64,
        /// The map task.
        map: u32,
        /// Its accepted attempt.
        attempt: u32,
        /// The partition.
        partition: u32,
        /// The first byte wanted.
        offset: u64,
    },
    /// Fetch server to reducer.
    FetchReply {
        /// The file's size.
        total_bytes: u64,
        /// Bytes from the requested offset (a bounded chunk).
        data: Bytes,
        /// Set when the file cannot be served.
        error: Option<String>,
    },
}

impl Encoder {
    /// The body of a `MapReduce` frame.
    pub fn mapreduce_body(&mut self, message: &MrMessage) -> Result<&[u8], EncodeError> {
        check_estimate(estimate(message))?;
        self.builder.reset();
        let b = &mut self.builder;
        let (body_type, body) = match message {
            MrMessage::RequestTask { worker } => {
                let args = fb::RequestTaskArgs { worker: *worker };
                (
                    fb::Body::RequestTask,
                    fb::RequestTask::create(b, &args).as_union_value(),
                )
            }
            MrMessage::Assignment(assignment) => (
                fb::Body::TaskAssignment,
                build_assignment(b, assignment).as_union_value(),
            ),
            MrMessage::TaskDone {
                task,
                counters,
                fetch_addr,
            } => {
                let fetch_addr = b.create_string(fetch_addr);
                let counters = fb::Counters::new(
                    counters.records_in,
                    counters.records_out,
                    counters.bytes_in,
                    counters.bytes_out,
                );
                let args = fb::TaskDoneArgs {
                    worker: task.worker,
                    job: task.job,
                    kind: kind_to_fb(task.kind),
                    task: task.task,
                    attempt: task.attempt,
                    counters: Some(&counters),
                    fetch_addr: Some(fetch_addr),
                };
                (
                    fb::Body::TaskDone,
                    fb::TaskDone::create(b, &args).as_union_value(),
                )
            }
            MrMessage::TaskFailed {
                task,
                failure,
                reason,
            } => {
                let reason = b.create_string(reason);
                let (failure, lost_map) = match failure {
                    FailureKind::TaskError => (fb::Failure::TaskError, 0),
                    FailureKind::MapOutputLost { map } => (fb::Failure::MapOutputLost, *map),
                };
                let args = fb::TaskFailedArgs {
                    worker: task.worker,
                    job: task.job,
                    kind: kind_to_fb(task.kind),
                    task: task.task,
                    attempt: task.attempt,
                    failure,
                    lost_map,
                    reason: Some(reason),
                };
                (
                    fb::Body::TaskFailed,
                    fb::TaskFailed::create(b, &args).as_union_value(),
                )
            }
            MrMessage::Heartbeat { task, bytes_done } => {
                let args = fb::HeartbeatArgs {
                    worker: task.worker,
                    job: task.job,
                    kind: kind_to_fb(task.kind),
                    task: task.task,
                    attempt: task.attempt,
                    bytes_done: *bytes_done,
                };
                (
                    fb::Body::Heartbeat,
                    fb::Heartbeat::create(b, &args).as_union_value(),
                )
            }
            MrMessage::FetchRequest {
                job,
                map,
                attempt,
                partition,
                offset,
            } => {
                let args = fb::FetchRequestArgs {
                    job: *job,
                    map: *map,
                    attempt: *attempt,
                    partition: *partition,
                    offset: *offset,
                };
                (
                    fb::Body::FetchRequest,
                    fb::FetchRequest::create(b, &args).as_union_value(),
                )
            }
            MrMessage::FetchReply {
                total_bytes,
                data,
                error,
            } => {
                let data = b.create_vector(data);
                let error = error.as_deref().map(|e| b.create_string(e));
                let args = fb::FetchReplyArgs {
                    total_bytes: *total_bytes,
                    data: Some(data),
                    error,
                };
                (
                    fb::Body::FetchReply,
                    fb::FetchReply::create(b, &args).as_union_value(),
                )
            }
        };
        let root = fb::MapReduceMessage::create(
            b,
            &fb::MapReduceMessageArgs {
                body_type,
                body: Some(body),
            },
        );
        b.finish_minimal(root);
        self.finished_body()
    }
}

/// An upper bound of the body's size from its variable parts, to refuse an oversized message
/// before building it.
fn estimate(message: &MrMessage) -> usize {
    const FIXED_BYTES: usize = 256;
    FIXED_BYTES
        + match message {
            MrMessage::Assignment(a) => {
                let job = a.job.as_ref().map_or(0, |job| {
                    job.app.len()
                        + job.work_dir.len()
                        + job.output_dir.len()
                        + job.app_args.iter().map(|s| s.len() + 16).sum::<usize>()
                });
                let task = match &a.assignment {
                    Assignment::Map(map) => map.file.len(),
                    Assignment::Reduce(reduce) => {
                        reduce.inputs.iter().map(|i| i.addr.len() + 48).sum()
                    }
                    _ => 0,
                };
                job + task
            }
            MrMessage::TaskDone { fetch_addr, .. } => fetch_addr.len(),
            MrMessage::TaskFailed { reason, .. } => reason.len(),
            MrMessage::FetchReply { data, error, .. } => {
                data.len() + error.as_ref().map_or(0, String::len)
            }
            _ => 0,
        }
}

fn kind_to_fb(kind: TaskKind) -> fb::TaskKind {
    match kind {
        TaskKind::Map => fb::TaskKind::Map,
        TaskKind::Reduce => fb::TaskKind::Reduce,
    }
}

fn build_assignment<'b>(
    b: &mut FlatBufferBuilder<'b>,
    assignment: &TaskAssignment,
) -> WIPOffset<fb::TaskAssignment<'b>> {
    let job = assignment.job.as_ref().map(|job| {
        let app = b.create_string(&job.app);
        let args: Vec<_> = job.app_args.iter().map(|a| b.create_string(a)).collect();
        let app_args = b.create_vector(&args);
        let work_dir = b.create_string(&job.work_dir);
        let output_dir = b.create_string(&job.output_dir);
        fb::Job::create(
            b,
            &fb::JobArgs {
                id: job.id,
                app: Some(app),
                app_args: Some(app_args),
                map_count: job.map_count,
                reduce_count: job.reduce_count,
                work_dir: Some(work_dir),
                output_dir: Some(output_dir),
                shared_intermediate: job.shared_intermediate,
            },
        )
    });
    let (assignment_type, body) = match &assignment.assignment {
        Assignment::Map(map) => {
            let file = b.create_string(&map.file);
            let args = fb::MapTaskArgs {
                task: map.task,
                attempt: map.attempt,
                file: Some(file),
                offset: map.offset,
                length: map.length,
            };
            (
                fb::Assignment::MapTask,
                fb::MapTask::create(b, &args).as_union_value(),
            )
        }
        Assignment::Reduce(reduce) => {
            let inputs: Vec<_> = reduce
                .inputs
                .iter()
                .map(|input| {
                    let addr = b.create_string(&input.addr);
                    fb::MapLocation::create(
                        b,
                        &fb::MapLocationArgs {
                            map: input.map,
                            attempt: input.attempt,
                            addr: Some(addr),
                        },
                    )
                })
                .collect();
            let inputs = b.create_vector(&inputs);
            let args = fb::ReduceTaskArgs {
                task: reduce.task,
                attempt: reduce.attempt,
                inputs: Some(inputs),
            };
            (
                fb::Assignment::ReduceTask,
                fb::ReduceTask::create(b, &args).as_union_value(),
            )
        }
        Assignment::Wait { retry_ms } => (
            fb::Assignment::Wait,
            fb::Wait::create(
                b,
                &fb::WaitArgs {
                    retry_ms: *retry_ms,
                },
            )
            .as_union_value(),
        ),
        Assignment::Exit { job_failed } => (
            fb::Assignment::Exit,
            fb::Exit::create(
                b,
                &fb::ExitArgs {
                    job_failed: *job_failed,
                },
            )
            .as_union_value(),
        ),
    };
    fb::TaskAssignment::create(
        b,
        &fb::TaskAssignmentArgs {
            job,
            lease_ms: assignment.lease_ms,
            heartbeat_ms: assignment.heartbeat_ms,
            assignment_type,
            assignment: Some(body),
        },
    )
}

/// Decodes a `MapReduce` frame body. `body` is the frame's body; fetched data is a slice of it.
pub fn decode_mapreduce(body: &Bytes) -> Result<MrMessage, DecodeError> {
    let message = shardcore_protocol::body::verify_mapreduce(body)?;
    let missing = |field| DecodeError::MissingField { field };
    Ok(match message.body_type() {
        fb::Body::RequestTask => {
            let request = message
                .body_as_request_task()
                .ok_or(missing("RequestTask"))?;
            MrMessage::RequestTask {
                worker: request.worker(),
            }
        }
        fb::Body::TaskAssignment => {
            let assignment = message
                .body_as_task_assignment()
                .ok_or(missing("TaskAssignment"))?;
            MrMessage::Assignment(decode_assignment(assignment)?)
        }
        fb::Body::TaskDone => {
            let done = message.body_as_task_done().ok_or(missing("TaskDone"))?;
            let task = task_ref(
                done.worker(),
                done.job(),
                done.kind(),
                done.task(),
                done.attempt(),
                "TaskDone.kind",
            )?;
            let counters = done.counters().map_or(Counters::default(), |c| Counters {
                records_in: c.records_in(),
                records_out: c.records_out(),
                bytes_in: c.bytes_in(),
                bytes_out: c.bytes_out(),
            });
            MrMessage::TaskDone {
                task,
                counters,
                fetch_addr: done.fetch_addr().to_string(),
            }
        }
        fb::Body::TaskFailed => {
            let failed = message.body_as_task_failed().ok_or(missing("TaskFailed"))?;
            let task = task_ref(
                failed.worker(),
                failed.job(),
                failed.kind(),
                failed.task(),
                failed.attempt(),
                "TaskFailed.kind",
            )?;
            let failure = match failed.failure() {
                fb::Failure::TaskError => FailureKind::TaskError,
                fb::Failure::MapOutputLost => FailureKind::MapOutputLost {
                    map: failed.lost_map(),
                },
                other => {
                    return Err(DecodeError::UnknownEnum {
                        field: "TaskFailed.failure",
                        value: other.0,
                    })
                }
            };
            MrMessage::TaskFailed {
                task,
                failure,
                reason: failed.reason().to_string(),
            }
        }
        fb::Body::Heartbeat => {
            let beat = message.body_as_heartbeat().ok_or(missing("Heartbeat"))?;
            let task = task_ref(
                beat.worker(),
                beat.job(),
                beat.kind(),
                beat.task(),
                beat.attempt(),
                "Heartbeat.kind",
            )?;
            MrMessage::Heartbeat {
                task,
                bytes_done: beat.bytes_done(),
            }
        }
        fb::Body::FetchRequest => {
            let fetch = message
                .body_as_fetch_request()
                .ok_or(missing("FetchRequest"))?;
            MrMessage::FetchRequest {
                job: fetch.job(),
                map: fetch.map(),
                attempt: fetch.attempt(),
                partition: fetch.partition(),
                offset: fetch.offset(),
            }
        }
        fb::Body::FetchReply => {
            let reply = message.body_as_fetch_reply().ok_or(missing("FetchReply"))?;
            let data = slice_of(body, reply.data());
            if data.len() as u64 > reply.total_bytes() {
                return Err(DecodeError::Inconsistent {
                    field: "FetchReply.data",
                    why: "more bytes than the file holds",
                });
            }
            MrMessage::FetchReply {
                total_bytes: reply.total_bytes(),
                data,
                error: reply.error().map(str::to_string),
            }
        }
        other => {
            return Err(DecodeError::UnknownEnum {
                field: "MapReduceMessage.body",
                value: other.0,
            })
        }
    })
}

fn task_ref(
    worker: u64,
    job: u64,
    kind: fb::TaskKind,
    task: u32,
    attempt: u32,
    field: &'static str,
) -> Result<TaskRef, DecodeError> {
    let kind = match kind {
        fb::TaskKind::Map => TaskKind::Map,
        fb::TaskKind::Reduce => TaskKind::Reduce,
        other => {
            return Err(DecodeError::UnknownEnum {
                field,
                value: other.0,
            })
        }
    };
    Ok(TaskRef {
        worker,
        job,
        kind,
        task,
        attempt,
    })
}

fn decode_assignment(a: fb::TaskAssignment<'_>) -> Result<TaskAssignment, DecodeError> {
    let missing = |field| DecodeError::MissingField { field };
    let job = a.job().map(|job| JobSpec {
        id: job.id(),
        app: job.app().to_string(),
        app_args: job
            .app_args()
            .map(|args| args.iter().map(str::to_string).collect())
            .unwrap_or_default(),
        map_count: job.map_count(),
        reduce_count: job.reduce_count(),
        work_dir: job.work_dir().to_string(),
        output_dir: job.output_dir().to_string(),
        shared_intermediate: job.shared_intermediate(),
    });
    let assignment = match a.assignment_type() {
        fb::Assignment::MapTask => {
            let map = a.assignment_as_map_task().ok_or(missing("MapTask"))?;
            Assignment::Map(MapTaskSpec {
                task: map.task(),
                attempt: map.attempt(),
                file: map.file().to_string(),
                offset: map.offset(),
                length: map.length(),
            })
        }
        fb::Assignment::ReduceTask => {
            let reduce = a.assignment_as_reduce_task().ok_or(missing("ReduceTask"))?;
            let inputs: Vec<MapLocation> = reduce
                .inputs()
                .map(|inputs| {
                    inputs
                        .iter()
                        .map(|input| MapLocation {
                            map: input.map(),
                            attempt: input.attempt(),
                            addr: input.addr().to_string(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            Assignment::Reduce(ReduceTaskSpec {
                task: reduce.task(),
                attempt: reduce.attempt(),
                inputs,
            })
        }
        fb::Assignment::Wait => Assignment::Wait {
            retry_ms: a.assignment_as_wait().ok_or(missing("Wait"))?.retry_ms(),
        },
        fb::Assignment::Exit => Assignment::Exit {
            job_failed: a.assignment_as_exit().ok_or(missing("Exit"))?.job_failed(),
        },
        other => {
            return Err(DecodeError::UnknownEnum {
                field: "TaskAssignment.assignment",
                value: other.0,
            })
        }
    };
    check_assignment(job.as_ref(), &assignment)?;
    Ok(TaskAssignment {
        job,
        lease_ms: a.lease_ms(),
        heartbeat_ms: a.heartbeat_ms(),
        assignment,
    })
}

/// What the verifier cannot judge: a task must come with its job and lie inside it, and a
/// reduce must name every map's output exactly once, in order.
fn check_assignment(job: Option<&JobSpec>, assignment: &Assignment) -> Result<(), DecodeError> {
    let inconsistent = |field, why| Err(DecodeError::Inconsistent { field, why });
    match (job, assignment) {
        (None, Assignment::Map(_) | Assignment::Reduce(_)) => {
            inconsistent("TaskAssignment.job", "a task without its job")
        }
        (Some(job), Assignment::Map(map)) if map.task >= job.map_count => {
            inconsistent("MapTask.task", "beyond the job's map count")
        }
        (Some(job), Assignment::Reduce(reduce)) if reduce.task >= job.reduce_count => {
            inconsistent("ReduceTask.task", "beyond the job's reduce count")
        }
        (Some(job), Assignment::Reduce(reduce))
            if reduce.inputs.len() != job.map_count as usize
                || reduce
                    .inputs
                    .iter()
                    .enumerate()
                    .any(|(i, input)| input.map as usize != i) =>
        {
            inconsistent("ReduceTask.inputs", "not one location per map, in order")
        }
        (Some(job), _) if job.reduce_count == 0 => {
            inconsistent("Job.reduce_count", "a job needs a reduce task")
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    //! Round trips of every message variant and refusal of garbage, truncation and bit flips.
    use bytes::Bytes;

    use super::*;
    use crate::rng::Rng;

    fn job() -> JobSpec {
        JobSpec {
            id: 7,
            app: "wc".into(),
            app_args: vec!["x".into(), "yz".into()],
            map_count: 3,
            reduce_count: 2,
            work_dir: "/tmp/w".into(),
            output_dir: "/tmp/o".into(),
            shared_intermediate: false,
        }
    }

    fn task() -> TaskRef {
        TaskRef {
            worker: 9,
            job: 7,
            kind: TaskKind::Reduce,
            task: 1,
            attempt: 2,
        }
    }

    fn every_variant() -> Vec<MrMessage> {
        let assignment = |assignment| {
            MrMessage::Assignment(TaskAssignment {
                job: Some(job()),
                lease_ms: 10_000,
                heartbeat_ms: 1000,
                assignment,
            })
        };
        vec![
            MrMessage::RequestTask { worker: 5 },
            assignment(Assignment::Map(MapTaskSpec {
                task: 2,
                attempt: 1,
                file: "a.txt".into(),
                offset: 10,
                length: 20,
            })),
            assignment(Assignment::Reduce(ReduceTaskSpec {
                task: 1,
                attempt: 0,
                inputs: (0..3)
                    .map(|map| MapLocation {
                        map,
                        attempt: map + 1,
                        addr: "127.0.0.1:9".into(),
                    })
                    .collect(),
            })),
            assignment(Assignment::Wait { retry_ms: 100 }),
            MrMessage::Assignment(TaskAssignment {
                job: None,
                lease_ms: 1,
                heartbeat_ms: 1,
                assignment: Assignment::Exit { job_failed: true },
            }),
            MrMessage::TaskDone {
                task: task(),
                counters: Counters {
                    records_in: 1,
                    records_out: 2,
                    bytes_in: 3,
                    bytes_out: 4,
                },
                fetch_addr: "127.0.0.1:1".into(),
            },
            MrMessage::TaskFailed {
                task: task(),
                failure: FailureKind::MapOutputLost { map: 2 },
                reason: "gone".into(),
            },
            MrMessage::TaskFailed {
                task: task(),
                failure: FailureKind::TaskError,
                reason: "bad".into(),
            },
            MrMessage::Heartbeat {
                task: task(),
                bytes_done: 77,
            },
            MrMessage::FetchRequest {
                job: 1,
                map: 2,
                attempt: 3,
                partition: 4,
                offset: 5,
            },
            MrMessage::FetchReply {
                total_bytes: 10,
                data: Bytes::from_static(b"hello"),
                error: None,
            },
            MrMessage::FetchReply {
                total_bytes: 0,
                data: Bytes::new(),
                error: Some("no such file".into()),
            },
        ]
    }

    #[test]
    fn every_variant_round_trips() {
        let mut encoder = Encoder::new();
        for message in every_variant() {
            let body = Bytes::copy_from_slice(encoder.mapreduce_body(&message).unwrap());
            assert_eq!(decode_mapreduce(&body).unwrap(), message);
        }
    }

    #[test]
    fn inconsistent_reduce_is_refused() {
        let mut encoder = Encoder::new();
        let message = MrMessage::Assignment(TaskAssignment {
            job: Some(job()),
            lease_ms: 1,
            heartbeat_ms: 1,
            assignment: Assignment::Reduce(ReduceTaskSpec {
                task: 0,
                attempt: 0,
                inputs: vec![],
            }),
        });
        let body = Bytes::copy_from_slice(encoder.mapreduce_body(&message).unwrap());
        assert!(matches!(
            decode_mapreduce(&body),
            Err(DecodeError::Inconsistent { .. })
        ));
    }

    /// Every truncation and every bit flip of every variant, and seeded garbage: an error or
    /// some message, never a panic.
    #[test]
    fn damaged_bodies_never_panic() {
        let mut encoder = Encoder::new();
        for message in every_variant() {
            let body = encoder.mapreduce_body(&message).unwrap().to_vec();
            for len in 0..body.len() {
                let _ = decode_mapreduce(&Bytes::copy_from_slice(&body[..len]));
            }
            for bit in 0..body.len() * 8 {
                let mut flipped = body.clone();
                flipped[bit / 8] ^= 1 << (bit % 8);
                let _ = decode_mapreduce(&Bytes::from(flipped));
            }
        }
        let seed = 1;
        println!("SEED={seed}");
        let mut rng = Rng::new(seed);
        for _ in 0..2000 {
            let len = rng.range(0, 200) as usize;
            let garbage: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            let _ = decode_mapreduce(&Bytes::from(garbage));
        }
    }
}
