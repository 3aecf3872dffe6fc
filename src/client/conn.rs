//! One client connection to one node: requests pipelined on it, replies matched by request id.
//! KV requests and shard controller requests share the connection and one id space, so a reply
//! of either kind finds its waiter.
//!
//! A reader task takes reply frames off the socket and hands each reply to the request waiting
//! for it; a request still waiting at its caller's deadline is given up (`TimedOut`) by a reaper
//! task that runs while requests wait, and a late reply is dropped. When the connection fails, every request waiting on it is told so at once, and the
//! connection is marked dead for the client to replace.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use shardcore_io::{FrameReader, FrameWriter, TcpStream};
use shardcore_protocol::FrameKind;

use crate::wire::shardctl::{decode_controller_reply, ControllerReply, ControllerRequest};
use crate::wire::{
    decode_replies, request_estimate, ClientReply, ClientRequest, Encoder, Hello, HelloRole,
    RequestId,
};
use shardcore_protocol::limits::MAX_REQUESTS_PER_FRAME;

/// Why a request got no reply on a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnError {
    /// The connection failed or was closed (the request may or may not have arrived).
    Closed(String),
    /// The request could not be encoded (too large for a frame).
    Encode(String),
    /// No reply came by the caller's deadline (the request may or may not have arrived).
    TimedOut,
}

/// A reply of either kind the connection carries.
enum Answer {
    Kv(ClientReply),
    Ctl(ControllerReply),
}

/// The slot a reply lands in, and the waiter to wake.
#[derive(Default)]
struct Slot {
    reply: Option<Result<Answer, ConnError>>,
    waker: Option<Waker>,
}

type SlotRef = Rc<RefCell<Slot>>;

/// Hands `reply` to the request waiting on `slot` and wakes it.
fn fill(slot: &SlotRef, reply: Result<Answer, ConnError>) {
    let mut slot = slot.borrow_mut();
    slot.reply = Some(reply);
    if let Some(waker) = slot.waker.take() {
        waker.wake();
    }
}

/// A future for one reply.
struct ReplyFuture {
    slot: SlotRef,
    id: RequestId,
    conn: Rc<Shared>,
}

impl Future for ReplyFuture {
    type Output = Result<Answer, ConnError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut slot = self.slot.borrow_mut();
        if let Some(reply) = slot.reply.take() {
            return Poll::Ready(reply);
        }
        slot.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for ReplyFuture {
    fn drop(&mut self) {
        // A caller that gave up (timeout) forgets the request; a late reply is dropped.
        self.conn.pending.borrow_mut().remove(&self.id);
    }
}

/// A request waiting for its reply.
struct Pending {
    slot: SlotRef,
    /// When the caller gives it up.
    until: Instant,
}

struct Shared {
    pending: RefCell<HashMap<RequestId, Pending>>,
    dead: RefCell<Option<String>>,
    /// A [`reap_expired`] task is running.
    reaping: Cell<bool>,
}

/// How often a connection with requests waiting looks for ones past their deadline: a
/// request is given up at most this late. Why not a timer per request: arming and cancelling
/// one per request was a tenth of a 64-client generator's CPU, and deadlines are rarely met.
const REAP_PERIOD: Duration = Duration::from_millis(5);

/// The most bytes of requests (by the encoder's estimate) one frame of the connection's
/// batched requests carries; a request larger than this goes in a frame of its own. Why
/// 1 MiB: well under the frame limit, and a batch is what one executor turn queued.
const MAX_BATCH_ESTIMATE_BYTES: usize = 1 << 20;

impl Shared {
    fn fail_all(&self, why: &str) {
        if self.dead.borrow().is_none() {
            *self.dead.borrow_mut() = Some(why.to_string());
        }
        let pending: Vec<SlotRef> = self
            .pending
            .borrow_mut()
            .drain()
            .map(|(_, p)| p.slot)
            .collect();
        for slot in pending {
            fill(&slot, Err(ConnError::Closed(why.to_string())));
        }
    }
}

/// A connection to one node. Cheap to share (`Rc`) among the tasks of one core.
pub struct Conn {
    shared: Rc<Shared>,
    writer: FrameWriter,
    encoder: RefCell<Encoder>,
    next_id: Cell<RequestId>,
    addr: SocketAddr,
    /// KV requests made since the last flush, sent together by [`Conn::flush_requests`].
    queued: RefCell<Vec<ClientRequest>>,
}

impl Conn {
    /// Connects to `addr` within `timeout` and says hello as a client of `cluster_id` (the
    /// wire form: [`crate::node::server::cluster_hash`] of the name).
    pub async fn connect(
        addr: SocketAddr,
        cluster_id: u64,
        timeout: Duration,
    ) -> io::Result<Rc<Conn>> {
        let stream = TcpStream::connect_timeout(addr, timeout).await?;
        let (reader, writer) = stream.into_framed();
        let shared = Rc::new(Shared {
            pending: RefCell::new(HashMap::new()),
            dead: RefCell::new(None),
            reaping: Cell::new(false),
        });
        let conn = Rc::new(Conn {
            shared: shared.clone(),
            writer,
            encoder: RefCell::new(Encoder::new()),
            next_id: Cell::new(1),
            addr,
            queued: RefCell::new(Vec::new()),
        });
        let hello = Hello {
            cluster_id,
            node_id: 0,
            role: HelloRole::Client,
            core_count: 0,
        };
        let body = conn
            .encoder
            .borrow_mut()
            .hello_body(&hello)
            .map(<[u8]>::to_vec)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        conn.writer.send(FrameKind::Hello, &body).await?;
        shardcore_io::spawn(read_replies(reader, shared)).detach();
        Ok(conn)
    }

    /// The node's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// False once the connection failed; make a new one.
    pub fn is_alive(&self) -> bool {
        self.shared.dead.borrow().is_none()
    }

    /// Sends one KV request and waits for its reply until `until` (then
    /// [`ConnError::TimedOut`]). The id is assigned here.
    ///
    /// Requests are batched: every KV request made on the connection during one turn of the
    /// core's executor goes out in one frame, written by a task queued behind the callers
    /// (as TiKV's client batches commands on a stream). A closed loop of 64 callers on one
    /// core sent 64 frames a round; the server checks, verifies and decodes each frame, and
    /// the client encodes each: both did that work once per request instead of once per turn.
    /// (The flusher must be `spawn_queued`: a plain `spawn` runs it at once, and it took the
    /// first caller's request alone, so every request still had a frame of its own.)
    pub async fn call(
        self: &Rc<Self>,
        mut request: ClientRequest,
        until: Instant,
    ) -> Result<ClientReply, ConnError> {
        let (id, future) = self.expect_reply(until)?;
        request.id = id;
        let first = {
            let mut queued = self.queued.borrow_mut();
            queued.push(request);
            queued.len() == 1
        };
        if first {
            let conn = self.clone();
            shardcore_io::spawn_queued(async move { conn.flush_requests().await }).detach();
        }
        match future.await? {
            Answer::Kv(reply) => Ok(reply),
            Answer::Ctl(_) => Err(self.mismatch()),
        }
    }

    /// Sends the queued KV requests, as few frames as the limits allow. A request that cannot
    /// be encoded (too large for a frame) is answered with the reason, and only it.
    async fn flush_requests(&self) {
        let requests = std::mem::take(&mut *self.queued.borrow_mut());
        let mut start = 0;
        while start < requests.len() {
            let mut end = start;
            let mut estimate = 0;
            while end < requests.len() && end - start < MAX_REQUESTS_PER_FRAME {
                estimate += request_estimate(&requests[end]);
                if end > start && estimate > MAX_BATCH_ESTIMATE_BYTES {
                    break;
                }
                end += 1;
            }
            let batch = &requests[start..end];
            let kind = FrameKind::ClientRequest;
            if let Err(ConnError::Encode(why)) = self.send(kind, |e| e.requests_body(batch)).await {
                // Only a batch of one can be refused: a single request's estimate is what
                // passed or failed; anything larger is cut before it.
                for request in batch {
                    self.shared.refuse(request.id, &why);
                }
            }
            start = end;
        }
    }

    /// Sends one shard controller request and waits for its reply until `until` (then
    /// [`ConnError::TimedOut`]). The id is assigned here.
    pub async fn call_controller(
        self: &Rc<Self>,
        mut request: ControllerRequest,
        until: Instant,
    ) -> Result<ControllerReply, ConnError> {
        let (id, future) = self.expect_reply(until)?;
        request.id = id;
        let kind = FrameKind::ControllerRequest;
        self.send(kind, |e| e.controller_request_body(&request))
            .await?;
        match future.await? {
            Answer::Ctl(reply) => Ok(reply),
            Answer::Kv(_) => Err(self.mismatch()),
        }
    }

    /// A fresh id and the future its reply (or its deadline, `until`) will complete.
    fn expect_reply(&self, until: Instant) -> Result<(RequestId, ReplyFuture), ConnError> {
        if let Some(why) = self.shared.dead.borrow().clone() {
            return Err(ConnError::Closed(why));
        }
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let slot: SlotRef = Rc::default();
        let pending = Pending {
            slot: slot.clone(),
            until,
        };
        self.shared.pending.borrow_mut().insert(id, pending);
        if !self.shared.reaping.replace(true) {
            shardcore_io::spawn(reap_expired(self.shared.clone())).detach();
        }
        let future = ReplyFuture {
            slot,
            id,
            conn: self.shared.clone(),
        };
        Ok((id, future))
    }

    /// A reply of the other kind for our id: the server is confused; drop the connection.
    fn mismatch(&self) -> ConnError {
        let why = "the server answered with a reply of the wrong kind";
        self.shared.fail_all(why);
        ConnError::Closed(why.to_string())
    }

    /// Encodes a body and queues it: straight from the encoder into the connection's queue when
    /// it has room (one copy); a copy waits for room otherwise.
    async fn send(
        &self,
        kind: FrameKind,
        encode: impl FnOnce(&mut Encoder) -> Result<&[u8], crate::wire::EncodeError>,
    ) -> Result<(), ConnError> {
        let waiting_body = {
            let mut encoder = self.encoder.borrow_mut();
            let body = encode(&mut encoder).map_err(|e| ConnError::Encode(e.to_string()))?;
            match self.writer.try_send(kind, body) {
                Ok(()) => {
                    // On the wire now if the connection's writer is idle: the turn's requests
                    // are all in this frame (the flusher runs behind the callers).
                    self.writer.send_now();
                    None
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Some(body.to_vec()),
                Err(e) => {
                    self.shared.fail_all(&format!("write: {e}"));
                    None
                }
            }
        };
        if let Some(body) = waiting_body {
            if let Err(e) = self.writer.send(kind, &body).await {
                self.shared.fail_all(&format!("write: {e}"));
            }
        }
        Ok(())
    }
}

/// Gives up the connection's requests that are past their deadline, every [`REAP_PERIOD`],
/// until none waits (the next request starts it again).
async fn reap_expired(shared: Rc<Shared>) {
    loop {
        shardcore_io::sleep(REAP_PERIOD).await;
        let now = Instant::now();
        let mut expired: Vec<SlotRef> = Vec::new();
        shared.pending.borrow_mut().retain(|_, p| {
            let keep = p.until > now;
            if !keep {
                expired.push(p.slot.clone());
            }
            keep
        });
        for slot in expired {
            fill(&slot, Err(ConnError::TimedOut));
        }
        if shared.pending.borrow().is_empty() {
            shared.reaping.set(false);
            return;
        }
    }
}

async fn read_replies(mut reader: FrameReader, shared: Rc<Shared>) {
    let mut replies = Vec::new();
    let why = loop {
        let frame = match reader.next_frame().await {
            Ok(Some(frame)) => frame,
            Ok(None) => break "closed by the server".to_string(),
            Err(e) => break e.to_string(),
        };
        match frame.kind {
            FrameKind::ClientResponse => {
                replies.clear();
                if let Err(e) = decode_replies(&frame.body, &mut replies) {
                    break format!("bad reply frame: {e}");
                }
                for reply in replies.drain(..) {
                    shared.complete(reply.id, Answer::Kv(reply));
                }
            }
            FrameKind::ControllerReply => match decode_controller_reply(&frame.body) {
                Ok(reply) => shared.complete(reply.id, Answer::Ctl(reply)),
                Err(e) => break format!("bad controller reply frame: {e}"),
            },
            other => break format!("unexpected {other:?} frame from the server"),
        }
    };
    shared.fail_all(&why);
}

impl Shared {
    /// Tells the request `id` that it could not be sent, and why.
    fn refuse(&self, id: RequestId, why: &str) {
        self.finish(id, Err(ConnError::Encode(why.to_string())));
    }

    /// Hands `answer` to the request `id` waiting for it (none: it gave up; dropped).
    fn complete(&self, id: RequestId, answer: Answer) {
        self.finish(id, Ok(answer));
    }

    /// Hands `reply` to the request `id` if it still waits.
    fn finish(&self, id: RequestId, reply: Result<Answer, ConnError>) {
        let slot = self.pending.borrow_mut().remove(&id).map(|p| p.slot);
        if let Some(slot) = slot {
            fill(&slot, reply);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use shardcore_io::runtime::Pinning;
    use shardcore_io::{Core, RuntimeConfig, TcpListener};

    use std::cell::RefCell;
    use std::rc::Rc;
    use std::time::Instant;

    use shardcore_protocol::FrameKind;

    use super::{Conn, ConnError};
    use crate::client::{sessionless, Client, ClientConfig, ClientError, ClientStats};
    use crate::kv::{Consistency, Op};
    use crate::wire::{decode_requests, ClientRequest};

    fn one_core() -> RuntimeConfig {
        RuntimeConfig {
            cores: 1,
            pinning: Pinning::Unpinned,
            name: "conn-test".to_string(),
            ..RuntimeConfig::default()
        }
    }

    /// A listener on a free loopback port, and its address.
    fn listen() -> (TcpListener, std::net::SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let addr = listener.local_addr().expect("local addr");
        (listener, addr)
    }

    /// A node that takes requests and never answers: the connection gives each attempt up
    /// at its deadline, the client tries again, and the operation ends `Timeout` at its own
    /// deadline. (The outer bound only turns a hang into a failure; nothing here is timed.)
    #[test]
    fn a_silent_node_has_each_attempt_given_up() {
        let mut outputs = shardcore_io::run(one_core(), |_core: Core<()>| async {
            let (listener, addr) = listen();
            shardcore_io::spawn(async move {
                while let Ok(stream) = listener.accept().await {
                    shardcore_io::spawn(async move {
                        let (mut reader, _writer) = stream.into_framed();
                        while let Ok(Some(_)) = reader.next_frame().await {}
                    })
                    .detach();
                }
            })
            .detach();
            let mut config = ClientConfig::new(vec![(1, addr)]);
            config.attempt_timeout = Duration::from_millis(50);
            config.op_timeout = Duration::from_millis(400);
            let client = Client::new(config).expect("client");
            let get = client.get(Bytes::from_static(b"k"));
            let result = shardcore_io::timeout(Duration::from_secs(30), get).await;
            (result, client.stats())
        })
        .expect("runtime");
        let (result, stats): (_, ClientStats) = outputs.pop().expect("one core");
        assert_eq!(result.ok(), Some(Err(ClientError::Timeout)), "{stats:?}");
        assert!(
            stats.attempts >= 2,
            "every attempt waited forever: {stats:?}"
        );
    }

    /// The requests made on a connection in one turn go out in one frame: the flusher runs
    /// behind the callers. (A flusher that ran at once, inside the first caller's `call`, sent
    /// each request in a frame of its own.)
    #[test]
    fn one_turns_requests_share_one_frame() {
        const CALLS: usize = 8;
        let mut outputs = shardcore_io::run(one_core(), |_core: Core<()>| async {
            let (listener, addr) = listen();
            // Requests per request frame, as a silent node receives them.
            let frames: Rc<RefCell<Vec<usize>>> = Rc::default();
            let seen = frames.clone();
            shardcore_io::spawn(async move {
                let Ok(stream) = listener.accept().await else {
                    return;
                };
                let (mut reader, _writer) = stream.into_framed();
                let mut requests = Vec::new();
                while let Ok(Some(frame)) = reader.next_frame().await {
                    if frame.kind == FrameKind::ClientRequest {
                        requests.clear();
                        decode_requests(&frame.body, &mut requests).expect("a request frame");
                        seen.borrow_mut().push(requests.len());
                    }
                }
            })
            .detach();
            let conn = Conn::connect(addr, 0, Duration::from_secs(10))
                .await
                .expect("connect");
            let until = Instant::now() + Duration::from_millis(100);
            let calls: Vec<_> = (0..CALLS)
                .map(|i| {
                    let conn = conn.clone();
                    let request = ClientRequest {
                        id: 0,
                        group: 1,
                        request: sessionless(
                            Op::Get {
                                key: Bytes::from(format!("k{i}")),
                            },
                            Consistency::Linearizable,
                        ),
                    };
                    shardcore_io::spawn(async move { conn.call(request, until).await })
                })
                .collect();
            for call in calls {
                assert_eq!(call.await.err(), Some(ConnError::TimedOut));
            }
            // The node has read the frame by now, or reads it soon: bounded wait.
            for _ in 0..500 {
                if frames.borrow().iter().sum::<usize>() >= CALLS {
                    break;
                }
                shardcore_io::sleep(Duration::from_millis(10)).await;
            }
            frames.take()
        })
        .expect("runtime");
        assert_eq!(outputs.pop().expect("one core"), vec![CALLS]);
    }
}
