//! One client connection to one node: requests pipelined on it, replies matched by request id.
//!
//! A reader task takes reply frames off the socket and hands each reply to the request waiting
//! for it; a request that waits past its caller's timeout simply stops waiting (a late reply is
//! dropped). When the connection fails, every request waiting on it is told so at once, and the
//! connection is marked dead for the client to replace.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use shardcore_io::{FrameReader, FrameWriter, TcpStream};
use shardcore_protocol::FrameKind;

use crate::wire::{
    decode_replies, ClientReply, ClientRequest, Encoder, Hello, HelloRole, RequestId,
};

/// Why a request got no reply on a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnError {
    /// The connection failed or was closed (the request may or may not have arrived).
    Closed(String),
    /// The request could not be encoded (too large for a frame).
    Encode(String),
}

/// The slot a reply lands in, and the waiter to wake.
#[derive(Default)]
struct Slot {
    reply: Option<Result<ClientReply, ConnError>>,
    waker: Option<Waker>,
}

type SlotRef = Rc<RefCell<Slot>>;

/// A future for one reply.
pub struct ReplyFuture {
    slot: SlotRef,
    id: RequestId,
    conn: Rc<Shared>,
}

impl Future for ReplyFuture {
    type Output = Result<ClientReply, ConnError>;

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

struct Shared {
    pending: RefCell<HashMap<RequestId, SlotRef>>,
    dead: RefCell<Option<String>>,
}

impl Shared {
    fn fail_all(&self, why: &str) {
        if self.dead.borrow().is_none() {
            *self.dead.borrow_mut() = Some(why.to_string());
        }
        let pending: Vec<SlotRef> = self.pending.borrow_mut().drain().map(|(_, s)| s).collect();
        for slot in pending {
            let mut slot = slot.borrow_mut();
            slot.reply = Some(Err(ConnError::Closed(why.to_string())));
            if let Some(waker) = slot.waker.take() {
                waker.wake();
            }
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
        });
        let conn = Rc::new(Conn {
            shared: shared.clone(),
            writer,
            encoder: RefCell::new(Encoder::new()),
            next_id: Cell::new(1),
            addr,
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

    /// Sends one request and returns the future of its reply. The id is assigned here.
    pub async fn call(
        self: &Rc<Self>,
        mut request: ClientRequest,
    ) -> Result<ClientReply, ConnError> {
        if let Some(why) = self.shared.dead.borrow().clone() {
            return Err(ConnError::Closed(why));
        }
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        request.id = id;
        let slot: SlotRef = Rc::default();
        self.shared.pending.borrow_mut().insert(id, slot.clone());
        let future = ReplyFuture {
            slot,
            id,
            conn: self.shared.clone(),
        };
        // Straight from the encoder into the connection's queue when it has room (one copy);
        // a copy waits for room otherwise.
        let waiting_body = {
            let mut encoder = self.encoder.borrow_mut();
            let body = match encoder.requests_body(std::slice::from_ref(&request)) {
                Ok(body) => body,
                Err(e) => return Err(ConnError::Encode(e.to_string())),
            };
            match self.writer.try_send(FrameKind::ClientRequest, body) {
                Ok(()) => None,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Some(body.to_vec()),
                Err(e) => {
                    self.shared.fail_all(&format!("write: {e}"));
                    None
                }
            }
        };
        if let Some(body) = waiting_body {
            if let Err(e) = self.writer.send(FrameKind::ClientRequest, &body).await {
                self.shared.fail_all(&format!("write: {e}"));
            }
        }
        future.await
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
        if frame.kind != FrameKind::ClientResponse {
            break format!("unexpected {:?} frame from the server", frame.kind);
        }
        replies.clear();
        if let Err(e) = decode_replies(&frame.body, &mut replies) {
            break format!("bad reply frame: {e}");
        }
        for reply in replies.drain(..) {
            let slot = shared.pending.borrow_mut().remove(&reply.id);
            if let Some(slot) = slot {
                let mut slot = slot.borrow_mut();
                slot.reply = Some(Ok(reply));
                if let Some(waker) = slot.waker.take() {
                    waker.wake();
                }
            }
        }
    };
    shared.fail_all(&why);
}
