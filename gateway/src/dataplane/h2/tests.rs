//! The poll-style TLS adapter on both monoio drivers: a BoringSSL pair over a loopback TCP
//! connection, raw bytes both ways and then a whole HTTP/2 exchange through the `h2` crate
//! (client and server both on the adapter), on one monoio thread and no tokio runtime.

use std::future::poll_fn;

use boring::ssl::{Ssl, SslAcceptor, SslConnector, SslMethod, SslVerifyMode};
use bytes::Bytes;
use hyperium_http as http;
use monoio::net::{TcpListener, TcpStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::io::PollTls;
use crate::dataplane::Driver;
use crate::tls::server::{build_acceptor, ServerTlsSettings};
use crate::tls::stream::TlsStream;
use crate::tls::tickets::TicketKeys;

fn acceptor(dir: &std::path::Path) -> SslAcceptor {
    let groups = vec!["X25519".to_owned()];
    let alpn = vec!["h2".to_owned(), "http/1.1".to_owned()];
    let settings = ServerTlsSettings {
        certificate: None,
        private_key: None,
        data_dir: dir,
        session_tickets: true,
        key_exchange_groups: &groups,
        alpn: &alpn,
        client_certificates: crate::config::ClientCertificates::Off,
    };
    build_acceptor(&settings, &TicketKeys::random().unwrap()).unwrap()
}

fn drivers() -> Vec<Driver> {
    let mut drivers = vec![Driver::Epoll];
    if monoio::utils::detect_uring() {
        drivers.push(Driver::IoUring);
    }
    drivers
}

/// A connected pair, both handshakes done: (server, client).
async fn pair(acceptor: &SslAcceptor) -> (TlsStream, TlsStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let ssl = Ssl::new(acceptor.context()).unwrap();
    let server = monoio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        TlsStream::accept(tcp, ssl).await.unwrap()
    });
    let mut connector = SslConnector::builder(SslMethod::tls()).unwrap();
    connector.set_verify(SslVerifyMode::NONE);
    connector.set_alpn_protos(b"\x02h2\x08http/1.1").unwrap();
    let ssl = connector
        .build()
        .configure()
        .unwrap()
        .into_ssl("localhost")
        .unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut client = TlsStream::client(tcp, ssl).unwrap();
    client.handshake().await.unwrap();
    let server = server.await;
    (server, client)
}

/// 1 MiB and a bit, not a multiple of any buffer size.
fn payload() -> Vec<u8> {
    (0..(1 << 20) + 12_345).map(|i| (i % 251) as u8).collect()
}

#[test]
fn the_adapter_carries_bytes_both_ways() {
    let dir = testkit::temp_dir("h2-adapter").unwrap();
    let acceptor = acceptor(dir.path());
    for driver in drivers() {
        driver
            .block_on(async {
                let (server, mut client) = pair(&acceptor).await;
                assert_eq!(server.ssl().selected_alpn_protocol(), Some(&b"h2"[..]));
                let mut server = PollTls::new(server).unwrap();
                let data = payload();
                let len = data.len();
                // The server echoes what it reads, poll-style, while the client writes.
                let echo = monoio::spawn(async move {
                    let mut got = vec![0u8; len];
                    server.read_exact(&mut got).await.unwrap();
                    server.write_all(&got).await.unwrap();
                    server.flush().await.unwrap();
                    server.shutdown().await.unwrap();
                    got
                });
                client.write_all(&data).await.unwrap();
                let mut back = Vec::new();
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let n = client.read(&mut buf).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    back.extend_from_slice(&buf[..n]);
                }
                assert_eq!(echo.await, data, "{driver:?}: server read");
                assert_eq!(back, data, "{driver:?}: client read");
            })
            .unwrap();
    }
}

/// Answers with the length of the request body.
async fn answer(
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
) {
    let mut body = request.into_body();
    let mut received = 0usize;
    while let Some(data) = poll_fn(|cx| body.poll_data(cx)).await {
        let data = data.unwrap();
        received += data.len();
        let _ = body.flow_control().release_capacity(data.len());
    }
    let response = http::Response::builder().status(200).body(()).unwrap();
    let mut send = respond.send_response(response, false).unwrap();
    send.send_data(Bytes::from(received.to_string()), true)
        .unwrap();
}

#[test]
fn h2_runs_over_the_adapter_on_monoio() {
    let dir = testkit::temp_dir("h2-exchange").unwrap();
    let acceptor = acceptor(dir.path());
    for driver in drivers() {
        driver
            .block_on(async {
                let (server, client) = pair(&acceptor).await;
                let server = PollTls::new(server).unwrap();
                let client = PollTls::new(client).unwrap();
                let serving = monoio::spawn(async move {
                    let mut conn = h2::server::handshake(server).await.unwrap();
                    // Each stream in a task of its own: `accept` drives the connection.
                    while let Some(next) = conn.accept().await {
                        let (request, respond) = next.unwrap();
                        monoio::spawn(answer(request, respond));
                    }
                });
                let (mut sender, connection) = h2::client::handshake(client).await.unwrap();
                let driving = monoio::spawn(async move {
                    let _ = connection.await;
                });
                let request = http::Request::builder()
                    .method("POST")
                    .uri("https://localhost/upload")
                    .body(())
                    .unwrap();
                let (response, mut send) = sender.send_request(request, false).unwrap();
                let mut data = Bytes::from(payload());
                while !data.is_empty() {
                    send.reserve_capacity(data.len());
                    let n = poll_fn(|cx| send.poll_capacity(cx)).await.unwrap().unwrap();
                    let piece = data.split_to(n.min(data.len()));
                    send.send_data(piece, data.is_empty()).unwrap();
                }
                let response = response.await.unwrap();
                assert_eq!(response.status(), 200);
                let mut body = response.into_body();
                let mut text = Vec::new();
                while let Some(data) = poll_fn(|cx| body.poll_data(cx)).await {
                    text.extend_from_slice(&data.unwrap());
                }
                assert_eq!(text, payload().len().to_string().as_bytes(), "{driver:?}");
                // Both connections' tasks end with the runtime.
                drop((sender, driving, serving));
            })
            .unwrap();
    }
}

#[test]
fn a_stream_becomes_an_http1_head() {
    use super::serve::http1_head;
    let request = http::Request::builder()
        .method("POST")
        .uri("https://api.example:8443/orders/1?x=1")
        .header("host", "ignored.example")
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .header("x-custom", "yes")
        .body(())
        .unwrap();
    let (parts, ()) = request.into_parts();
    let head = http1_head(&parts, false).unwrap();
    assert_eq!(head.method(), "POST");
    assert_eq!(head.target(), "/orders/1?x=1");
    let fields: Vec<(String, String)> = head
        .headers()
        .map(|h| (h.name.to_owned(), h.value_str().to_owned()))
        .collect();
    let field = |name: &str| {
        fields
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(field("host"), ["api.example:8443"], "{fields:?}");
    assert_eq!(field("cookie"), ["a=1; b=2"], "{fields:?}");
    assert_eq!(field("x-custom"), ["yes"]);
    // No content-length and a body to come: chunked to the backend.
    assert_eq!(field("transfer-encoding"), ["chunked"]);
    let head = http1_head(&parts, true).unwrap();
    assert!(head.headers().all(|h| !h.is("transfer-encoding")));
}

#[test]
fn trailers_keep_end_to_end_fields_only() {
    use super::serve::trailer_fields;
    assert!(trailer_fields(b"").is_none());
    let map = trailer_fields(b"Grpc-Status: 0\r\nContent-Length: 3\r\nX-Sum: abc\r\n").unwrap();
    assert_eq!(map.len(), 2, "{map:?}");
    assert_eq!(map["grpc-status"], "0");
    assert_eq!(map["x-sum"], "abc");
    assert!(trailer_fields(b"Content-Length: 3\r\n").is_none());
}
