//! Raft batches: every message one node sends another in one frame, for any number of groups.
//!
//! Heartbeats and heartbeat responses, most of an idle cluster's traffic, become vectors of
//! fixed-size structs (32 and 24 bytes a group, no per-message table: coalesced per node, as
//! Redpanda's heartbeat_manager does); every other message is one `Message` table with a body
//! union. Decoding therefore yields a batch's heartbeats first, then its heartbeat responses,
//! then its other messages, each kind in the order it was encoded. Raft needs no order across
//! messages (each is judged on its own term and indexes; the simulator reorders freely), and a
//! heartbeat's commit is capped at what the follower is known to hold, so arriving before an
//! Append sent ahead of it does no harm.

use bytes::Bytes;
use shardcore_protocol::flatbuffers::{self, UnionWIPOffset, WIPOffset};
use shardcore_protocol::schema::raft as fb;

use super::{check_estimate, slice_of, DecodeError, EncodeError, Encoder};
use crate::raft::{
    AppendResponse, CampaignReason, Entry, EntryKind, Message, MessageBody, NodeId, SnapshotMeta,
    VoteKind,
};

impl Encoder {
    /// The body of a `PeerRaft` frame carrying `messages`, every one of which must be from
    /// `from` to `to`.
    pub fn raft_batch_body(
        &mut self,
        from: NodeId,
        to: NodeId,
        messages: &[Message],
    ) -> Result<&[u8], EncodeError> {
        if let Some(stray) = messages.iter().find(|m| (m.from, m.to) != (from, to)) {
            return Err(EncodeError::WrongEndpoints {
                group: stray.group,
                from: stray.from,
                to: stray.to,
            });
        }
        check_estimate(messages.iter().map(Message::approx_bytes).sum())?;
        self.builder.reset();
        let heartbeats = self.heartbeats(messages);
        let heartbeat_responses = self.heartbeat_responses(messages);
        self.messages.clear();
        for message in messages {
            if let Some((body_type, body)) = self.body(&message.body) {
                let args = fb::MessageArgs {
                    group: message.group,
                    term: message.term,
                    body_type,
                    body: Some(body),
                };
                let offset = fb::Message::create(&mut self.builder, &args);
                self.messages.push(offset);
            }
        }
        let others =
            (!self.messages.is_empty()).then(|| self.builder.create_vector(&self.messages));
        let batch = fb::RaftBatch::create(
            &mut self.builder,
            &fb::RaftBatchArgs {
                from,
                to,
                heartbeats,
                heartbeat_responses,
                messages: others,
            },
        );
        self.builder.finish_minimal(batch);
        self.finished_body()
    }

    /// The batch's heartbeats as a vector of structs, in order (absent when there are none).
    fn heartbeats(
        &mut self,
        messages: &[Message],
    ) -> Option<WIPOffset<flatbuffers::Vector<'static, fb::Heartbeat>>> {
        let structs = messages.iter().filter_map(|message| match message.body {
            MessageBody::Heartbeat { commit, read_round } => Some(fb::Heartbeat::new(
                message.group,
                message.term,
                commit,
                read_round,
            )),
            _ => None,
        });
        self.struct_vector(structs)
    }

    /// The batch's heartbeat responses as a vector of structs (absent when there are none).
    fn heartbeat_responses(
        &mut self,
        messages: &[Message],
    ) -> Option<WIPOffset<flatbuffers::Vector<'static, fb::HeartbeatResponse>>> {
        let structs = messages.iter().filter_map(|message| match message.body {
            MessageBody::HeartbeatResponse { read_round } => Some(fb::HeartbeatResponse::new(
                message.group,
                message.term,
                read_round,
            )),
            _ => None,
        });
        self.struct_vector(structs)
    }

    /// A vector of the structs `items` yields, without collecting them first: FlatBuffers
    /// vectors are written back to front, so the items are counted, then pushed in reverse.
    fn struct_vector<T>(
        &mut self,
        items: impl DoubleEndedIterator<Item = T> + Clone,
    ) -> Option<WIPOffset<flatbuffers::Vector<'static, T::Output>>>
    where
        T: flatbuffers::Push + 'static,
    {
        let count = items.clone().count();
        if count == 0 {
            return None;
        }
        self.builder.start_vector::<T>(count);
        for item in items.rev() {
            self.builder.push(item);
        }
        let vector = self.builder.end_vector::<T>(count);
        Some(WIPOffset::new(vector.value()))
    }

    /// The body union of one message; `None` for heartbeats and their responses, which travel
    /// as structs.
    fn body(&mut self, body: &MessageBody) -> Option<(fb::Body, WIPOffset<UnionWIPOffset>)> {
        let builder = &mut self.builder;
        let union = match body {
            MessageBody::Heartbeat { .. } | MessageBody::HeartbeatResponse { .. } => return None,
            MessageBody::Vote {
                kind,
                last_index,
                last_term,
                reason,
            } => {
                let args = fb::VoteArgs {
                    kind: vote_kind_to_wire(*kind),
                    last_index: *last_index,
                    last_term: *last_term,
                    reason: match reason {
                        CampaignReason::Timeout => fb::CampaignReason::Timeout,
                        CampaignReason::Transfer => fb::CampaignReason::Transfer,
                    },
                };
                let vote = fb::Vote::create(builder, &args);
                (fb::Body::Vote, vote.as_union_value())
            }
            MessageBody::VoteResponse { kind, granted } => {
                let args = fb::VoteResponseArgs {
                    kind: vote_kind_to_wire(*kind),
                    granted: *granted,
                };
                let response = fb::VoteResponse::create(builder, &args);
                (fb::Body::VoteResponse, response.as_union_value())
            }
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => {
                let entries = self.entries(entries);
                let args = fb::AppendArgs {
                    prev_index: *prev_index,
                    prev_term: *prev_term,
                    entries,
                    commit: *commit,
                };
                let append = fb::Append::create(&mut self.builder, &args);
                (fb::Body::Append, append.as_union_value())
            }
            MessageBody::AppendResponse(response) => {
                let (accepted, rejected) = match *response {
                    AppendResponse::Accepted { match_index } => {
                        (Some(fb::AppendAccepted::new(match_index)), None)
                    }
                    AppendResponse::Rejected {
                        rejected_index,
                        hint_index,
                        hint_term,
                    } => (
                        None,
                        Some(fb::AppendRejected::new(
                            rejected_index,
                            hint_index,
                            hint_term,
                        )),
                    ),
                };
                let args = fb::AppendResponseArgs {
                    accepted: accepted.as_ref(),
                    rejected: rejected.as_ref(),
                };
                let response = fb::AppendResponse::create(builder, &args);
                (fb::Body::AppendResponse, response.as_union_value())
            }
            MessageBody::SnapshotChunk {
                meta,
                total_bytes,
                offset,
                data,
            } => {
                let data = (!data.is_empty()).then(|| builder.create_vector(&data[..]));
                let meta = fb::SnapshotMeta::new(meta.index, meta.term);
                let args = fb::SnapshotChunkArgs {
                    meta: Some(&meta),
                    total_bytes: *total_bytes,
                    offset: *offset,
                    data,
                };
                let chunk = fb::SnapshotChunk::create(builder, &args);
                (fb::Body::SnapshotChunk, chunk.as_union_value())
            }
            MessageBody::SnapshotResponse {
                index,
                next_offset,
                done,
            } => {
                let args = fb::SnapshotResponseArgs {
                    index: *index,
                    next_offset: *next_offset,
                    done: *done,
                };
                let response = fb::SnapshotResponse::create(builder, &args);
                (fb::Body::SnapshotResponse, response.as_union_value())
            }
            MessageBody::TimeoutNow => {
                let timeout_now = fb::TimeoutNow::create(builder, &fb::TimeoutNowArgs {});
                (fb::Body::TimeoutNow, timeout_now.as_union_value())
            }
            MessageBody::ReadIndex { context } => {
                let context = (!context.is_empty()).then(|| builder.create_vector(&context[..]));
                let read = fb::ReadIndex::create(builder, &fb::ReadIndexArgs { context });
                (fb::Body::ReadIndex, read.as_union_value())
            }
            MessageBody::ReadIndexResponse { context, index } => {
                let context = (!context.is_empty()).then(|| builder.create_vector(&context[..]));
                let args = fb::ReadIndexResponseArgs {
                    context,
                    index: *index,
                };
                let response = fb::ReadIndexResponse::create(builder, &args);
                (fb::Body::ReadIndexResponse, response.as_union_value())
            }
        };
        Some(union)
    }

    /// An Append's entries vector (absent when there are none).
    fn entries(
        &mut self,
        entries: &[Entry],
    ) -> Option<
        WIPOffset<flatbuffers::Vector<'static, flatbuffers::ForwardsUOffset<fb::Entry<'static>>>>,
    > {
        if entries.is_empty() {
            return None;
        }
        self.entries.clear();
        for entry in entries {
            let data =
                (!entry.data.is_empty()).then(|| self.builder.create_vector(&entry.data[..]));
            let args = fb::EntryArgs {
                term: entry.term,
                index: entry.index,
                kind: match entry.kind {
                    EntryKind::Normal => fb::EntryKind::Normal,
                    EntryKind::Noop => fb::EntryKind::Noop,
                },
                data,
            };
            let offset = fb::Entry::create(&mut self.builder, &args);
            self.entries.push(offset);
        }
        Some(self.builder.create_vector(&self.entries))
    }
}

/// Decodes a `PeerRaft` frame body, appending its messages to `out`: heartbeats, then heartbeat
/// responses, then the other messages (see the module docs). Byte strings are slices of `body`.
/// On error `out` is left as it was.
pub fn decode_raft_batch(body: &Bytes, out: &mut Vec<Message>) -> Result<(), DecodeError> {
    let start = out.len();
    let result = decode_into(body, out);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn decode_into(body: &Bytes, out: &mut Vec<Message>) -> Result<(), DecodeError> {
    let batch = shardcore_protocol::body::verify_raft_batch(body)?;
    let (from, to) = (batch.from(), batch.to());
    let heartbeats = batch.heartbeats().unwrap_or_default();
    let heartbeat_responses = batch.heartbeat_responses().unwrap_or_default();
    let messages = batch.messages().unwrap_or_default();
    // The verifier has checked every vector against the body, so this is bounded by its size.
    out.reserve(heartbeats.len() + heartbeat_responses.len() + messages.len());
    for heartbeat in heartbeats {
        out.push(Message {
            group: heartbeat.group(),
            from,
            to,
            term: heartbeat.term(),
            body: MessageBody::Heartbeat {
                commit: heartbeat.commit(),
                read_round: heartbeat.read_round(),
            },
        });
    }
    for response in heartbeat_responses {
        out.push(Message {
            group: response.group(),
            from,
            to,
            term: response.term(),
            body: MessageBody::HeartbeatResponse {
                read_round: response.read_round(),
            },
        });
    }
    for message in messages {
        out.push(Message {
            group: message.group(),
            from,
            to,
            term: message.term(),
            body: decode_body(body, &message)?,
        });
    }
    Ok(())
}

/// The body union of one message.
fn decode_body(body: &Bytes, message: &fb::Message<'_>) -> Result<MessageBody, DecodeError> {
    let missing = DecodeError::MissingField {
        field: "Message.body",
    };
    Ok(match message.body_type() {
        fb::Body::Vote => {
            let vote = message.body_as_vote().ok_or(missing)?;
            MessageBody::Vote {
                kind: vote_kind_from_wire(vote.kind(), "Vote.kind")?,
                last_index: vote.last_index(),
                last_term: vote.last_term(),
                reason: match vote.reason() {
                    fb::CampaignReason::Timeout => CampaignReason::Timeout,
                    fb::CampaignReason::Transfer => CampaignReason::Transfer,
                    other => return Err(unknown("Vote.reason", other.0)),
                },
            }
        }
        fb::Body::VoteResponse => {
            let response = message.body_as_vote_response().ok_or(missing)?;
            MessageBody::VoteResponse {
                kind: vote_kind_from_wire(response.kind(), "VoteResponse.kind")?,
                granted: response.granted(),
            }
        }
        fb::Body::Append => decode_append(body, &message.body_as_append().ok_or(missing)?)?,
        fb::Body::AppendResponse => {
            let response = message.body_as_append_response().ok_or(missing)?;
            MessageBody::AppendResponse(decode_append_response(&response)?)
        }
        fb::Body::SnapshotChunk => {
            let chunk = message.body_as_snapshot_chunk().ok_or(missing)?;
            MessageBody::SnapshotChunk {
                meta: SnapshotMeta {
                    index: chunk.meta().index(),
                    term: chunk.meta().term(),
                },
                total_bytes: chunk.total_bytes(),
                offset: chunk.offset(),
                data: slice_of(body, chunk.data()),
            }
        }
        fb::Body::SnapshotResponse => {
            let response = message.body_as_snapshot_response().ok_or(missing)?;
            MessageBody::SnapshotResponse {
                index: response.index(),
                next_offset: response.next_offset(),
                done: response.done(),
            }
        }
        fb::Body::TimeoutNow => {
            message.body_as_timeout_now().ok_or(missing)?;
            MessageBody::TimeoutNow
        }
        fb::Body::ReadIndex => {
            let read = message.body_as_read_index().ok_or(missing)?;
            MessageBody::ReadIndex {
                context: slice_of(body, read.context()),
            }
        }
        fb::Body::ReadIndexResponse => {
            let response = message.body_as_read_index_response().ok_or(missing)?;
            MessageBody::ReadIndexResponse {
                context: slice_of(body, response.context()),
                index: response.index(),
            }
        }
        fb::Body::NONE => return Err(missing),
        other => return Err(unknown("Message.body_type", other.0)),
    })
}

fn decode_append(body: &Bytes, append: &fb::Append<'_>) -> Result<MessageBody, DecodeError> {
    let wire_entries = append.entries().unwrap_or_default();
    let mut entries = Vec::with_capacity(wire_entries.len());
    for entry in wire_entries {
        entries.push(Entry {
            term: entry.term(),
            index: entry.index(),
            kind: match entry.kind() {
                fb::EntryKind::Normal => EntryKind::Normal,
                fb::EntryKind::Noop => EntryKind::Noop,
                other => return Err(unknown("Entry.kind", other.0)),
            },
            data: slice_of(body, entry.data()),
        });
    }
    Ok(MessageBody::Append {
        prev_index: append.prev_index(),
        prev_term: append.prev_term(),
        entries,
        commit: append.commit(),
    })
}

fn decode_append_response(
    response: &fb::AppendResponse<'_>,
) -> Result<AppendResponse, DecodeError> {
    match (response.accepted(), response.rejected()) {
        (Some(accepted), None) => Ok(AppendResponse::Accepted {
            match_index: accepted.match_index(),
        }),
        (None, Some(rejected)) => Ok(AppendResponse::Rejected {
            rejected_index: rejected.rejected_index(),
            hint_index: rejected.hint_index(),
            hint_term: rejected.hint_term(),
        }),
        _ => Err(DecodeError::Inconsistent {
            field: "AppendResponse",
            why: "exactly one of accepted and rejected must be present",
        }),
    }
}

fn vote_kind_to_wire(kind: VoteKind) -> fb::VoteKind {
    match kind {
        VoteKind::Pre => fb::VoteKind::Pre,
        VoteKind::Real => fb::VoteKind::Real,
    }
}

fn vote_kind_from_wire(kind: fb::VoteKind, field: &'static str) -> Result<VoteKind, DecodeError> {
    match kind {
        fb::VoteKind::Pre => Ok(VoteKind::Pre),
        fb::VoteKind::Real => Ok(VoteKind::Real),
        other => Err(unknown(field, other.0)),
    }
}

fn unknown(field: &'static str, value: u8) -> DecodeError {
    DecodeError::UnknownEnum { field, value }
}
