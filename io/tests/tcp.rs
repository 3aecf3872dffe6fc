//! TCP and frames over loopback: an echo of frames between two cores whose writer coalesces, a
//! malformed frame (garbage, bad checksum, oversize length) that ends only its own connection,
//! two cores binding one port, and a peer link that reconnects after its listener restarts.

mod support;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use shardcore_io::{
    sleep, spawn, CoreId, FrameError, FrameReader, FrameWriter, PeerLink, PeerLinkConfig,
    TcpListener, TcpStream,
};
use shardcore_protocol::{encode, FrameKind};
use support::run_cores;

/// The longest any test here waits for a condition. Why 10 s: each one holds within
/// milliseconds on loopback; ten seconds only ends a test that would otherwise hang.
const CONDITION_LIMIT: Duration = Duration::from_secs(10);

/// Polls `condition` every millisecond until it holds, at most [`CONDITION_LIMIT`]; panics
/// naming `what` past that.
async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + CONDITION_LIMIT;
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within {CONDITION_LIMIT:?}"
        );
        sleep(Duration::from_millis(1)).await;
    }
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Echoes every frame of one connection until it ends; returns how it ended.
async fn echo_connection(stream: TcpStream) -> Result<u64, FrameError> {
    let (mut reader, writer) = stream.into_framed();
    let mut echoed = 0;
    while let Some(frame) = reader.next_frame().await? {
        writer
            .send(frame.kind, &frame.body)
            .await
            .map_err(FrameError::Io)?;
        echoed += 1;
    }
    writer.flush().await.map_err(FrameError::Io)?;
    Ok(echoed)
}

/// Core 0 echoes; core 1 queues 300 frames without yielding, so the writer task finds them all
/// queued and writes them in far fewer writes than frames; every frame comes back intact and in
/// order.
#[test]
fn frames_echo_between_two_cores_and_coalesce() {
    const FRAMES: u64 = 300;
    let results = run_cores(2, 4, |core| async move {
        let inbox = core.take_receiver().unwrap();
        if core.id() == CoreId(0) {
            let listener = TcpListener::bind(loopback()).unwrap();
            let port = listener.local_addr().unwrap().port();
            core.send(CoreId(1), port).await.unwrap();
            let stream = listener.accept().await.unwrap();
            let echoed = echo_connection(stream).await.unwrap();
            return (echoed, 0);
        }
        let (_, port) = inbox.recv().await.unwrap();
        let stream = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .unwrap();
        let (mut reader, writer) = stream.into_framed();
        for n in 0..FRAMES {
            writer
                .try_send(FrameKind::ClientRequest, &n.to_le_bytes())
                .unwrap();
        }
        writer.flush().await.unwrap();
        let batches = writer.stats().batches;
        for n in 0..FRAMES {
            let frame = reader.next_frame().await.unwrap().expect("an echo");
            assert_eq!(frame.kind, FrameKind::ClientRequest);
            assert_eq!(frame.body, Bytes::copy_from_slice(&n.to_le_bytes()));
        }
        drop(writer);
        assert!(
            reader.next_frame().await.unwrap().is_none(),
            "a clean end after FIN"
        );
        (FRAMES, batches)
    });
    assert_eq!(results[0].0, FRAMES, "core 0 echoed every frame");
    let batches = results[1].1;
    println!("{FRAMES} frames written in {batches} writes");
    assert!(
        (1..FRAMES / 10).contains(&batches),
        "{batches} writes for {FRAMES} frames"
    );
}

/// The bytes of a valid frame with one body byte flipped: the checksum no longer matches.
fn bad_checksum_frame() -> Vec<u8> {
    let mut bytes = BytesMut::new();
    encode(FrameKind::ClientRequest, b"hello", &mut bytes).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    bytes.to_vec()
}

/// A header announcing a body one byte over the protocol's limit.
fn oversize_header() -> Vec<u8> {
    let mut bytes = BytesMut::new();
    encode(FrameKind::ClientRequest, b"", &mut bytes).unwrap();
    let too_large = shardcore_protocol::limits::MAX_FRAME_BYTES + 1;
    bytes[8..12].copy_from_slice(&too_large.to_le_bytes());
    bytes.to_vec()
}

/// Sends `n` on the good connection and checks that it comes back.
async fn round_trip(reader: &mut FrameReader, writer: &FrameWriter, n: u32) {
    writer
        .try_send(FrameKind::ClientRequest, &n.to_le_bytes())
        .unwrap();
    let echo = reader.next_frame().await.unwrap().expect("an echo");
    assert_eq!(
        &echo.body[..],
        &n.to_le_bytes(),
        "the good connection keeps working"
    );
}

/// Sends raw bytes on a new connection and waits for the server to end it.
async fn send_raw_until_closed(addr: SocketAddr, bytes: &[u8]) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut buf = [0u8; 64];
    // The server closes: an end of stream, or a reset if it closed with our bytes unread.
    while let Ok(1..) = stream.read(&mut buf).await {}
}

/// One good connection echoes before, between and after three bad ones; each bad connection is
/// closed by the server with an error naming what was wrong (bad magic, checksum, size), and the
/// good one never notices.
#[test]
fn a_malformed_frame_ends_only_its_connection() {
    let results = run_cores(1, 4, |_core: shardcore_io::Core<()>| async move {
        let listener = TcpListener::bind(loopback()).unwrap();
        let addr = listener.local_addr().unwrap();
        let errors = Rc::new(RefCell::new(Vec::new()));
        let server_errors = errors.clone();
        let server = spawn(async move {
            loop {
                let stream = listener.accept().await.unwrap();
                let errors = server_errors.clone();
                spawn(async move {
                    if let Err(error) = echo_connection(stream).await {
                        errors.borrow_mut().push(error.to_string());
                    }
                })
                .detach();
            }
        });
        let (mut good_reader, good_writer) = TcpStream::connect(addr).await.unwrap().into_framed();
        round_trip(&mut good_reader, &good_writer, 0).await;
        send_raw_until_closed(addr, b"GET / HTTP/1.1\r\n\r\n").await;
        round_trip(&mut good_reader, &good_writer, 1).await;
        send_raw_until_closed(addr, &bad_checksum_frame()).await;
        round_trip(&mut good_reader, &good_writer, 2).await;
        send_raw_until_closed(addr, &oversize_header()).await;
        // The handlers record their error just before closing; give the last one a moment.
        wait_until("three handlers record their error", || {
            errors.borrow().len() >= 3
        })
        .await;
        for n in 3..50 {
            round_trip(&mut good_reader, &good_writer, n).await;
        }
        drop(server);
        let errors = errors.borrow().clone();
        errors
    });
    let errors = &results[0];
    assert_eq!(errors.len(), 3, "{errors:?}");
    for (error, needle) in errors
        .iter()
        .zip(["magic", "checksum", "exceeds the limit"])
    {
        assert!(error.contains(needle), "{error:?} should name {needle:?}");
    }
}

/// Two cores bind the same port (SO_REUSEPORT) and between them accept and echo every one of 20
/// connections, whichever core the kernel gives each to.
#[test]
fn two_cores_listen_on_one_port() {
    const CONNECTIONS: u64 = 20;
    let results = run_cores(2, 4, |core| async move {
        let inbox = core.take_receiver().unwrap();
        let listener = if core.id() == CoreId(0) {
            let listener = TcpListener::bind(loopback()).unwrap();
            core.send(CoreId(1), listener.local_addr().unwrap())
                .await
                .unwrap();
            listener
        } else {
            let (_, addr) = inbox.recv().await.unwrap();
            TcpListener::bind(addr).expect("a second bind of the same port")
        };
        let addr = listener.local_addr().unwrap();
        let accepted = Rc::new(RefCell::new(0u64));
        let counter = accepted.clone();
        let server = spawn(async move {
            loop {
                let stream = listener.accept().await.unwrap();
                *counter.borrow_mut() += 1;
                spawn(async move { drop(echo_connection(stream).await) }).detach();
            }
        });
        if core.id() == CoreId(0) {
            for n in 0..CONNECTIONS {
                let (mut reader, writer) = TcpStream::connect(addr).await.unwrap().into_framed();
                writer
                    .send(FrameKind::Hello, &n.to_le_bytes())
                    .await
                    .unwrap();
                let echo = reader.next_frame().await.unwrap().unwrap();
                assert_eq!(&echo.body[..], &n.to_le_bytes());
            }
            core.send(CoreId(1), addr).await.unwrap();
        } else {
            // Core 0 says when its clients are done.
            inbox.recv().await.unwrap();
        }
        drop(server);
        let accepted = *accepted.borrow();
        accepted
    });
    assert_eq!(results.iter().sum::<u64>(), CONNECTIONS, "{results:?}");
    println!("connections accepted per core: {results:?}");
}

/// Collects every frame of every connection a listener accepts, in arrival order. Dropping the
/// returned task closes the listener and every connection it accepted.
fn collect_frames(listener: TcpListener, into: Rc<RefCell<Vec<Bytes>>>) -> shardcore_io::Task<()> {
    spawn(async move {
        // Owned by this task, so that cancelling it cancels them (and closes their connections).
        let mut connections = Vec::new();
        loop {
            let Ok(stream) = listener.accept().await else {
                return;
            };
            let into = into.clone();
            connections.push(spawn(async move {
                let (read, _write) = stream.into_split();
                let mut reader = FrameReader::new(read);
                while let Ok(Some(frame)) = reader.next_frame().await {
                    into.borrow_mut().push(frame.body);
                }
            }));
        }
    })
}

/// Sends frames `after 0`, `after 1`, ... on `link` (each put on the wire with `send_now` when
/// the link is idle) until `arrived` holds `count` frames, or panics after [`CONDITION_LIMIT`].
/// Frames sent while the link reconnects may be lost with a failed write (at most once), so
/// it keeps sending, paced by [`wait_until`]'s polling, until enough have arrived.
async fn send_until_arrived(link: &PeerLink, arrived: &RefCell<Vec<Bytes>>, count: usize) {
    let mut attempt = 0u32;
    wait_until("frames on the new connection", || {
        if arrived.borrow().len() >= count {
            return true;
        }
        let frame = format!("after {attempt}");
        attempt += 1;
        if link.try_send(FrameKind::PeerRaft, frame.as_bytes()).is_ok() {
            link.send_now();
        }
        false
    })
    .await;
}

/// A peer link delivers (hello first), notices when the listener goes away with its connection,
/// and once a listener is back on the same port reconnects by itself, says hello again, and
/// delivers what is sent after.
#[test]
fn peer_link_reconnects_after_the_listener_restarts() {
    let results = run_cores(1, 4, |_core: shardcore_io::Core<()>| async move {
        let listener = TcpListener::bind(loopback()).unwrap();
        let addr = listener.local_addr().unwrap();
        let first_life = Rc::new(RefCell::new(Vec::new()));
        let server = collect_frames(listener, first_life.clone());

        let mut config = PeerLinkConfig::new(addr);
        config.hello = Some((FrameKind::Hello, Bytes::from_static(b"node 7")));
        let link = PeerLink::new(config);
        link.try_send(FrameKind::PeerRaft, b"before").unwrap();
        wait_until("the hello and the first frame arrive", || {
            first_life.borrow().len() >= 2
        })
        .await;
        assert_eq!(
            *first_life.borrow(),
            vec![Bytes::from_static(b"node 7"), Bytes::from_static(b"before")]
        );

        // The listener and its connection go away (cancelling the task drops both) ...
        drop(server);
        wait_until("the link notices the listener is gone", || {
            !link.is_connected()
        })
        .await;
        // ... and come back on the same port.
        let listener = TcpListener::bind(addr).expect("rebinding the same port");
        let second_life = Rc::new(RefCell::new(Vec::new()));
        let _server = collect_frames(listener, second_life.clone());
        send_until_arrived(&link, &second_life, 2).await;
        let second = second_life.borrow().clone();
        (second, link.stats())
    });
    let (second, stats) = &results[0];
    assert_eq!(
        second[0],
        Bytes::from_static(b"node 7"),
        "hello first on the new connection"
    );
    assert!(second[1].starts_with(b"after "), "{second:?}");
    assert!(stats.connects >= 2, "{stats:?}");
    println!("peer link: {stats:?}");
}

/// A frame `send_now` puts on the wire in part (the peer does not read, so the socket takes
/// only some of it) is lost with its connection, never finished on the next one: after the
/// peer goes away and comes back, the new connection carries the hello and whole frames only.
#[test]
fn a_frame_sent_in_part_is_not_continued_on_the_next_connection() {
    /// Larger than loopback's socket buffers, smaller than the protocol's frame limit.
    const BIG: usize = 12 << 20;
    let results = run_cores(1, 4, |_core: shardcore_io::Core<()>| async move {
        let listener = TcpListener::bind(loopback()).unwrap();
        let addr = listener.local_addr().unwrap();
        // The first life accepts and never reads.
        let held = Rc::new(RefCell::new(Vec::new()));
        let first_life = {
            let held = held.clone();
            spawn(async move {
                while let Ok(stream) = listener.accept().await {
                    held.borrow_mut().push(stream);
                }
            })
        };
        let mut config = PeerLinkConfig::new(addr);
        config.hello = Some((FrameKind::Hello, Bytes::from_static(b"node 7")));
        let link = PeerLink::new(config);
        wait_until("connected", || link.is_connected()).await;
        link.try_send(FrameKind::PeerRaft, &vec![1u8; BIG]).unwrap();
        // The writer task may not be idle yet (the hello): retry until a direct send happens.
        let mut sent = link.send_now();
        wait_until("a direct send", || {
            sent = sent.max(link.send_now());
            sent > 0
        })
        .await;
        assert!(
            sent < BIG,
            "the socket took the whole {BIG}-byte frame: {sent}"
        );
        drop(first_life);
        drop(held);
        wait_until("the link notices", || !link.is_connected()).await;

        let listener = TcpListener::bind(addr).expect("rebinding the same port");
        let second_life = Rc::new(RefCell::new(Vec::new()));
        let _server = collect_frames(listener, second_life.clone());
        send_until_arrived(&link, &second_life, 3).await;
        let second = second_life.borrow().clone();
        (second, link.stats(), sent)
    });
    let (second, stats, sent) = &results[0];
    assert_eq!(
        second[0],
        Bytes::from_static(b"node 7"),
        "hello first: {second:?}"
    );
    for frame in &second[1..] {
        assert!(
            frame.starts_with(b"after "),
            "a whole frame: {:?}",
            &frame[..frame.len().min(16)]
        );
    }
    assert!(
        stats.frames_dropped >= 1,
        "the cut frame counts as dropped: {stats:?}"
    );
    println!("sent {sent} of {BIG} bytes directly; {stats:?}");
}
