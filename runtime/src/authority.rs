//! Accepting gRPC clients whatever `:authority` they send on the unix socket.
//!
//! HTTP/2 requests carry an `:authority` pseudo-header. On a unix socket there is no host name,
//! and clients fill it in their own way: grpc-go sends `localhost`, grpc-core (grpcio for
//! Python, Ruby, C++) sends the socket path percent-encoded (`tmp%2Fcsi.sock`), others the raw
//! path. The HTTP/2 server under tonic (h2) parses the value as a URI authority and answers
//! anything that does not parse with `RST_STREAM(PROTOCOL_ERROR)`, so every call of such a
//! client failed. A CSI endpoint must not depend on what its client happens to send.
//!
//! [`AuthorityFix`] sits between the accepted socket and the server and decides per
//! connection, at the client's first header block (a gRPC channel uses one authority for all
//! its calls): when that block's `:authority` is valid (grpc-go, kubelet, the sidecars), the
//! block and everything after it pass through untouched and the connection costs one HPACK
//! decode. Otherwise the client-to-server byte stream is rewritten for the connection's life:
//! each header block (HEADERS and its CONTINUATION frames) is decoded with a decoder that
//! mirrors the client's HPACK encoder, an `:authority` that is not a valid URI authority becomes
//! `localhost` (what grpc-go sends), and the block is encoded again with an encoder paired with
//! the server's decoder; because both HPACK contexts are kept, every block of such a connection
//! is re-encoded, not only the ones that change. All other frames, the connection preface and
//! the whole server-to-client direction pass through untouched. A stream that does not start
//! with the HTTP/2 preface, or a header block that does not decode, is passed through as it is
//! from there on, for the server to refuse as before.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use loona_hpack::{Decoder, Encoder};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::codegen::http::uri::Authority;
use tonic::transport::server::Connected;

/// What replaces an `:authority` the server cannot parse.
pub const FALLBACK_AUTHORITY: &[u8] = b"localhost";

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// Largest frame payload the server accepts before it says otherwise (SETTINGS_MAX_FRAME_SIZE
/// default); re-encoded blocks are cut into frames of at most this size.
const MAX_PAYLOAD: usize = 16_384;
/// Largest frame the protocol allows (2^24 - 1 payload); a longer length field means the
/// stream is not HTTP/2 and is passed through.
const PROTOCOL_MAX_PAYLOAD: usize = (1 << 24) - 1;
/// Most bytes read from the socket at once while a connection is looked at (the first header
/// block comes in the first few hundred bytes; afterwards the server reads the socket itself).
const READ_CHUNK: usize = 2_048;

/// The client's stream with invalid `:authority` values replaced (see the module docs).
pub struct AuthorityFix<S> {
    inner: S,
    rewriter: Rewriter,
    /// Rewritten bytes not yet handed to the server.
    out: Vec<u8>,
    out_pos: usize,
    eof: bool,
    /// Where bytes from the socket are read into (reused: no per-read allocation or zeroing).
    chunk: Box<[u8]>,
}

impl<S> AuthorityFix<S> {
    /// Wraps an accepted connection.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            rewriter: Rewriter::default(),
            out: Vec::new(),
            out_pos: 0,
            eof: false,
            chunk: vec![0u8; READ_CHUNK].into_boxed_slice(),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.out_pos < this.out.len() {
                let n = buf.remaining().min(this.out.len() - this.out_pos);
                buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.out.len() {
                    this.out.clear();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            if this.rewriter.passthrough && this.out.is_empty() {
                // Nothing to rewrite any more: the server reads the socket directly, and the
                // buffers and HPACK tables are given back (most connections get here at their
                // first request).
                if !this.chunk.is_empty() {
                    this.chunk = Box::default();
                    this.out = Vec::new();
                    this.rewriter = Rewriter::passing_through();
                }
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            let mut read = ReadBuf::new(&mut this.chunk[..]);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            let n = read.filled().len();
            if n == 0 {
                // End of the client's stream: whatever is left (a cut frame) goes on as it is.
                this.eof = true;
                this.rewriter.finish(&mut this.out);
            } else {
                this.rewriter.feed(&this.chunk[..n], &mut this.out);
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S: Connected> Connected for AuthorityFix<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// A header block being collected: its first frame's stream, flags and priority fields, the
/// fragments so far, and the original bytes of its frames (for passing through on an error).
struct Block {
    stream: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
    fragments: Vec<u8>,
    original: Vec<u8>,
}

/// The client-to-server rewriting, on bytes: the HTTP/2 framing and both HPACK contexts.
pub struct Rewriter {
    /// Bytes of the preface still expected.
    preface_left: usize,
    /// Input not yet forming a whole frame.
    input: Vec<u8>,
    block: Option<Block>,
    /// Mirrors the client's encoder.
    decoder: Decoder<'static>,
    /// Paired with the server's decoder.
    encoder: Encoder<'static>,
    /// Everything goes through unchanged from here on: the first header block was fine, or
    /// the stream is not HTTP/2 as expected.
    passthrough: bool,
    /// Whether header blocks are being re-encoded (decided at the first one).
    rewriting: bool,
    /// How many `:authority` values were replaced.
    replaced: u64,
}

impl Default for Rewriter {
    fn default() -> Self {
        Self {
            preface_left: PREFACE.len(),
            input: Vec::new(),
            block: None,
            decoder: Decoder::new(),
            encoder: Encoder::new(),
            passthrough: false,
            rewriting: false,
            replaced: 0,
        }
    }
}

impl Rewriter {
    /// A rewriter that hands everything on as it is, holding no buffer or table.
    fn passing_through() -> Self {
        Self {
            passthrough: true,
            ..Self::default()
        }
    }

    /// Takes bytes from the client and appends what the server is to read to `out`.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) {
        if self.passthrough {
            out.extend_from_slice(data);
            return;
        }
        self.input.extend_from_slice(data);
        if self.preface_left > 0 {
            let n = self.preface_left.min(self.input.len());
            let seen = PREFACE.len() - self.preface_left;
            if self.input[..n] != PREFACE[seen..seen + n] {
                self.pass_through_from_here(out);
                return;
            }
            out.extend(self.input.drain(..n));
            self.preface_left -= n;
            if self.preface_left > 0 {
                return;
            }
        }
        while self.input.len() >= FRAME_HEADER {
            let len = usize::from(self.input[0]) << 16
                | usize::from(self.input[1]) << 8
                | usize::from(self.input[2]);
            if len > PROTOCOL_MAX_PAYLOAD {
                self.pass_through_from_here(out);
                return;
            }
            if self.input.len() < FRAME_HEADER + len {
                return;
            }
            let frame: Vec<u8> = self.input.drain(..FRAME_HEADER + len).collect();
            self.frame(frame, out);
            if self.passthrough {
                // pass_through_from_here has handed on the rest of the input.
                return;
            }
        }
    }

    /// The client's stream ended: what is left goes through unchanged.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if let Some(block) = self.block.take() {
            out.extend_from_slice(&block.original);
        }
        out.append(&mut self.input);
    }

    /// How many `:authority` values were replaced so far.
    pub fn replaced(&self) -> u64 {
        self.replaced
    }

    fn pass_through_from_here(&mut self, out: &mut Vec<u8>) {
        self.passthrough = true;
        self.finish(out);
    }

    fn frame(&mut self, frame: Vec<u8>, out: &mut Vec<u8>) {
        let kind = frame[3];
        let flags = frame[4];
        let stream = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        match (&mut self.block, kind) {
            (None, HEADERS) => {
                let Some((priority, fragment)) = headers_payload(flags, &frame[FRAME_HEADER..])
                else {
                    out.extend_from_slice(&frame);
                    self.pass_through_from_here(out);
                    return;
                };
                let fragments = fragment.to_vec();
                self.block = Some(Block {
                    stream,
                    end_stream: flags & END_STREAM != 0,
                    priority,
                    fragments,
                    original: frame,
                });
                if flags & END_HEADERS != 0 {
                    self.end_block(out);
                }
            }
            (Some(block), CONTINUATION) if block.stream == stream => {
                block.fragments.extend_from_slice(&frame[FRAME_HEADER..]);
                block.original.extend_from_slice(&frame);
                if flags & END_HEADERS != 0 {
                    self.end_block(out);
                }
            }
            (None, _) => out.extend_from_slice(&frame),
            // Anything but the block's CONTINUATION while a block is open is a protocol error
            // the server reports itself.
            (Some(_), _) => {
                out.extend(self.block.take().into_iter().flat_map(|b| b.original));
                out.extend_from_slice(&frame);
                self.pass_through_from_here(out);
            }
        }
    }

    fn end_block(&mut self, out: &mut Vec<u8>) {
        let Some(block) = self.block.take() else {
            return;
        };
        let mut headers = match self.decoder.decode(&block.fragments) {
            Ok(h) => h,
            Err(_) => {
                out.extend_from_slice(&block.original);
                self.pass_through_from_here(out);
                return;
            }
        };
        if !self.rewriting {
            let fine = headers
                .iter()
                .all(|(n, v)| n.as_slice() != b":authority" || valid_authority(v));
            if fine {
                // The server's decoder sees the client's own bytes from the start: nothing to
                // keep in step, nothing more to look at.
                out.extend_from_slice(&block.original);
                self.pass_through_from_here(out);
                return;
            }
            self.rewriting = true;
        }
        for (name, value) in &mut headers {
            if name.as_slice() == b":authority" && !valid_authority(value) {
                *value = FALLBACK_AUTHORITY.to_vec();
                self.replaced += 1;
            }
        }
        let encoded = self
            .encoder
            .encode(headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        write_block(&block, &encoded, out);
    }
}

/// A HEADERS payload without its padding: the priority fields (when flagged) and the block
/// fragment; `None` when the lengths do not add up.
fn headers_payload(flags: u8, payload: &[u8]) -> Option<(Option<[u8; 5]>, &[u8])> {
    let mut p = payload;
    let mut pad = 0usize;
    if flags & PADDED != 0 {
        pad = usize::from(*p.first()?);
        p = &p[1..];
    }
    let mut priority = None;
    if flags & PRIORITY != 0 {
        let fields: [u8; 5] = p.get(..5)?.try_into().ok()?;
        priority = Some(fields);
        p = &p[5..];
    }
    let end = p.len().checked_sub(pad)?;
    Some((priority, &p[..end]))
}

/// Frames carrying `encoded` for `block`: one HEADERS, then CONTINUATIONs, each payload at most
/// [`MAX_PAYLOAD`]; no padding.
fn write_block(block: &Block, encoded: &[u8], out: &mut Vec<u8>) {
    let first_room = MAX_PAYLOAD - if block.priority.is_some() { 5 } else { 0 };
    let (first, mut rest) = encoded.split_at(encoded.len().min(first_room));
    let mut flags = 0u8;
    if block.end_stream {
        flags |= END_STREAM;
    }
    if block.priority.is_some() {
        flags |= PRIORITY;
    }
    if rest.is_empty() {
        flags |= END_HEADERS;
    }
    let priority = block.priority.as_ref().map_or(&[][..], |p| &p[..]);
    frame_header(
        priority.len() + first.len(),
        HEADERS,
        flags,
        block.stream,
        out,
    );
    out.extend_from_slice(priority);
    out.extend_from_slice(first);
    while !rest.is_empty() {
        let (part, tail) = rest.split_at(rest.len().min(MAX_PAYLOAD));
        rest = tail;
        let flags = if rest.is_empty() { END_HEADERS } else { 0 };
        frame_header(part.len(), CONTINUATION, flags, block.stream, out);
        out.extend_from_slice(part);
    }
}

fn frame_header(len: usize, kind: u8, flags: u8, stream: u32, out: &mut Vec<u8>) {
    let len = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    out.extend_from_slice(&len[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
}

/// Whether the server's URI parser takes `value` as an authority.
fn valid_authority(value: &[u8]) -> bool {
    !value.is_empty() && Authority::try_from(value).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    type Headers = Vec<(Vec<u8>, Vec<u8>)>;

    fn request(authority: &str, path: &str) -> Vec<(&'static [u8], Vec<u8>)> {
        vec![
            (b":method", b"POST".to_vec()),
            (b":scheme", b"http".to_vec()),
            (b":path", path.as_bytes().to_vec()),
            (b":authority", authority.as_bytes().to_vec()),
            (b"content-type", b"application/grpc".to_vec()),
            (b"te", b"trailers".to_vec()),
        ]
    }

    /// A client: the preface, a SETTINGS frame, and HEADERS of `requests` (one stream each,
    /// with one encoder, so later blocks refer to the dynamic table), each followed by a DATA
    /// frame.
    fn client_bytes(requests: &[Vec<(&'static [u8], Vec<u8>)>], flags: u8) -> Vec<u8> {
        let mut enc = Encoder::new();
        let mut out = PREFACE.to_vec();
        frame_header(0, 0x4, 0, 0, &mut out);
        for (i, r) in requests.iter().enumerate() {
            let stream = 1 + 2 * u32::try_from(i).expect("few");
            let block = enc.encode(r.iter().map(|(n, v)| (*n, v.as_slice())));
            let mut payload = Vec::new();
            if flags & PADDED != 0 {
                payload.push(3);
            }
            if flags & PRIORITY != 0 {
                payload.extend_from_slice(&[0, 0, 0, 0, 15]);
            }
            payload.extend_from_slice(&block);
            if flags & PADDED != 0 {
                payload.extend_from_slice(&[0, 0, 0]);
            }
            frame_header(
                payload.len(),
                HEADERS,
                END_HEADERS | flags,
                stream,
                &mut out,
            );
            out.extend_from_slice(&payload);
            frame_header(5, 0x0, END_STREAM, stream, &mut out);
            out.extend_from_slice(&[0, 0, 0, 0, 0]);
        }
        out
    }

    /// What the server sees: the header blocks, decoded with one decoder, and the other frames'
    /// types in order.
    fn server_view(bytes: &[u8]) -> (Vec<Headers>, Vec<u8>) {
        assert!(bytes.starts_with(PREFACE));
        let mut rest = &bytes[PREFACE.len()..];
        let mut dec = Decoder::new();
        let mut blocks = Vec::new();
        let mut kinds = Vec::new();
        let mut pending: Option<Vec<u8>> = None;
        while !rest.is_empty() {
            let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
            let (kind, flags) = (rest[3], rest[4]);
            let payload = &rest[FRAME_HEADER..FRAME_HEADER + len];
            rest = &rest[FRAME_HEADER + len..];
            kinds.push(kind);
            let fragment = match kind {
                HEADERS => headers_payload(flags, payload).expect("payload").1.to_vec(),
                CONTINUATION => {
                    let mut f = pending.take().expect("continuation after headers");
                    f.extend_from_slice(payload);
                    f
                }
                _ => continue,
            };
            if flags & END_HEADERS != 0 {
                blocks.push(dec.decode(&fragment).expect("server decodes"));
            } else {
                pending = Some(fragment);
            }
        }
        (blocks, kinds)
    }

    fn authority(h: &Headers) -> String {
        h.iter()
            .find(|(n, _)| n.as_slice() == b":authority")
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    }

    fn rewrite_in_chunks(input: &[u8], chunk: usize) -> (Vec<u8>, u64) {
        let mut r = Rewriter::default();
        let mut out = Vec::new();
        for c in input.chunks(chunk) {
            r.feed(c, &mut out);
        }
        r.finish(&mut out);
        (out, r.replaced())
    }

    #[test]
    fn a_percent_encoded_socket_path_becomes_localhost_and_the_rest_is_kept() {
        let reqs = vec![
            request("tmp%2Fcsi.sock", "/csi.v1.Identity/Probe"),
            // The same authority again: the client now sends it as a dynamic-table index.
            request("tmp%2Fcsi.sock", "/csi.v1.Identity/GetPluginInfo"),
            request("localhost", "/csi.v1.Node/NodeGetInfo"),
            request(
                "/var/lib/kubelet/plugins/x/csi.sock",
                "/csi.v1.Identity/Probe",
            ),
            request("", "/csi.v1.Identity/Probe"),
        ];
        for chunk in [1, 7, 64, 100_000] {
            let (out, replaced) = rewrite_in_chunks(&client_bytes(&reqs, 0), chunk);
            let (blocks, kinds) = server_view(&out);
            let got: Vec<String> = blocks.iter().map(authority).collect();
            assert_eq!(
                got,
                [
                    "localhost",
                    "localhost",
                    "localhost",
                    "localhost",
                    "localhost"
                ],
                "chunk {chunk}"
            );
            assert_eq!(replaced, 4, "chunk {chunk}");
            for (b, r) in blocks.iter().zip(&reqs) {
                let paths: Vec<&[u8]> = b
                    .iter()
                    .filter(|(n, _)| n.as_slice() != b":authority")
                    .map(|(_, v)| v.as_slice())
                    .collect();
                let want: Vec<&[u8]> = r
                    .iter()
                    .filter(|(n, _)| *n != b":authority")
                    .map(|(_, v)| v.as_slice())
                    .collect();
                assert_eq!(paths, want, "other headers unchanged, in order");
            }
            // SETTINGS, then HEADERS and DATA per request.
            assert_eq!(kinds.len(), 1 + 2 * reqs.len());
        }
    }

    #[test]
    fn padding_and_priority_are_handled_and_valid_authorities_stay() {
        let reqs = vec![
            request("tmp%2Fcsi.sock", "/a"),
            request("csi.example:8080", "/b"),
            request("tmp%2Fcsi.sock", "/c"),
        ];
        let (out, replaced) = rewrite_in_chunks(&client_bytes(&reqs, PADDED | PRIORITY), 5);
        let (blocks, _) = server_view(&out);
        assert_eq!(authority(&blocks[0]), "localhost");
        assert_eq!(authority(&blocks[1]), "csi.example:8080");
        assert_eq!(authority(&blocks[2]), "localhost");
        assert_eq!(replaced, 2);
    }

    #[test]
    fn a_connection_that_starts_with_a_valid_authority_passes_through_byte_for_byte() {
        let reqs = vec![
            request("localhost", "/csi.v1.Identity/Probe"),
            request("localhost", "/csi.v1.Node/NodeGetInfo"),
        ];
        for flags in [0, PADDED | PRIORITY] {
            let input = client_bytes(&reqs, flags);
            for chunk in [1, 9, 4096] {
                let (out, replaced) = rewrite_in_chunks(&input, chunk);
                assert_eq!(out, input, "chunk {chunk}");
                assert_eq!(replaced, 0);
            }
        }
    }

    #[test]
    fn a_block_split_into_continuations_is_joined_and_a_large_block_is_split_again() {
        let big = "x".repeat(40_000);
        let mut r = request("tmp%2Fcsi.sock", "/csi.v1.Identity/Probe");
        r.push((b"x-big", big.clone().into_bytes()));
        let block = Encoder::new().encode(r.iter().map(|(n, v)| (*n, v.as_slice())));
        let mut input = PREFACE.to_vec();
        let parts: Vec<&[u8]> = block.chunks(10_000).collect();
        for (i, part) in parts.iter().enumerate() {
            let kind = if i == 0 { HEADERS } else { CONTINUATION };
            let flags = if i + 1 == parts.len() { END_HEADERS } else { 0 };
            frame_header(part.len(), kind, flags, 1, &mut input);
            input.extend_from_slice(part);
        }
        let (out, _) = rewrite_in_chunks(&input, 4096);
        let (blocks, kinds) = server_view(&out);
        assert_eq!(blocks.len(), 1);
        assert_eq!(authority(&blocks[0]), "localhost");
        let big_back = blocks[0]
            .iter()
            .find(|(n, _)| n.as_slice() == b"x-big")
            .map(|(_, v)| v.len());
        assert_eq!(big_back, Some(40_000));
        assert_eq!(kinds[0], HEADERS);
        assert!(kinds[1..].iter().all(|k| *k == CONTINUATION) && kinds.len() >= 3);
    }

    #[test]
    fn what_is_not_http2_or_does_not_decode_passes_through_unchanged() {
        let not_h2 = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        assert_eq!(rewrite_in_chunks(&not_h2, 3).0, not_h2);

        let mut garbage = PREFACE.to_vec();
        frame_header(3, HEADERS, END_HEADERS, 1, &mut garbage);
        garbage.extend_from_slice(&[0xff, 0xff, 0xff]);
        frame_header(0, 0x4, 0, 0, &mut garbage);
        assert_eq!(rewrite_in_chunks(&garbage, 2).0, garbage);

        let mut cut = client_bytes(&[request("tmp%2Fx", "/a")], 0);
        cut.truncate(cut.len() - 3);
        let (out, _) = rewrite_in_chunks(&cut, 1000);
        let tail = &cut[cut.len() - (FRAME_HEADER + 2)..];
        assert!(out.ends_with(tail), "a cut frame is handed on, not dropped");
    }
}
