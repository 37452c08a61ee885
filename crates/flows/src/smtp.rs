//! An SMTP sink on loopback for tests and `make run`: a real SMTP server (RFC 5321 subset: `EHLO`/`HELO`,
//! `AUTH PLAIN`/`AUTH LOGIN`, `MAIL`, `RCPT`, `DATA` with dot-unstuffing, `RSET`, `NOOP`, `QUIT`) that keeps every
//! message it accepts — in memory, and as `<n>.eml` files in a directory when given one.
//!
//! Guarantees: a message is recorded (and its file written) before its `250` is sent, so a client that saw the
//! acceptance finds it here; [`SmtpSink::stop`] closes the listener and every open session (clients get
//! "connection refused" — an outage), [`SmtpSink::resume`] listens on the same port again; recipients can be
//! refused with a chosen reply ([`SmtpSink::refuse`]) and the answer to the data delayed ([`SmtpSink::delay`]).
//! Plain text only (no STARTTLS): it is a loopback development and test server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// One accepted message.
#[derive(Debug, Clone)]
pub struct Mail {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// The user of `AUTH`, when the client authenticated.
    pub auth_user: Option<String>,
    /// The message as received (CRLF line ends, dot-stuffing undone).
    pub data: Vec<u8>,
}

impl Mail {
    /// The message as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }

    /// The first header `name` (case-insensitive), unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        let text = self.text();
        let head = text.split("\r\n\r\n").next().unwrap_or("");
        let mut found: Option<String> = None;
        for line in head.split("\r\n") {
            if line.starts_with([' ', '\t']) {
                if let Some(f) = found.as_mut() {
                    f.push(' ');
                    f.push_str(line.trim());
                }
                continue;
            }
            if found.is_some() {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case(name)
            {
                found = Some(v.trim().to_string());
            }
        }
        found
    }
}

impl Mail {
    /// The leaf parts of the message as (content type, decoded text): `multipart/*` bodies are split at their
    /// boundary (nested ones too), each part's `7bit`/`8bit`/`quoted-printable`/`base64` body decoded.
    pub fn parts(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        parts_of(&self.text(), &mut out);
        out
    }

    /// The decoded text of the first part whose content type starts with `mime` (`text/plain`, `text/html`).
    pub fn part(&self, mime: &str) -> Option<String> {
        self.parts()
            .into_iter()
            .find(|(t, _)| t.starts_with(mime))
            .map(|(_, body)| body)
    }
}

/// A header of an entity's head (unfolded), case-insensitive.
fn head_value(head: &str, name: &str) -> Option<String> {
    Mail {
        mail_from: String::new(),
        rcpt_to: Vec::new(),
        auth_user: None,
        data: format!("{head}\r\n\r\n").into_bytes(),
    }
    .header(name)
}

fn parts_of(entity: &str, out: &mut Vec<(String, String)>) {
    let (head, body) = entity.split_once("\r\n\r\n").unwrap_or((entity, ""));
    let content_type = head_value(head, "Content-Type").unwrap_or_else(|| "text/plain".into());
    if content_type.to_ascii_lowercase().starts_with("multipart/") {
        let Some(boundary) = content_type.split(';').find_map(|p| {
            let p = p.trim();
            p.strip_prefix("boundary=")
                .map(|b| b.trim_matches('"').to_string())
        }) else {
            return;
        };
        let delimiter = format!("--{boundary}");
        for part in body.split(delimiter.as_str()).skip(1) {
            if part.starts_with("--") {
                break;
            }
            parts_of(part.trim_start_matches("\r\n"), out);
        }
        return;
    }
    let encoding = head_value(head, "Content-Transfer-Encoding")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let body = body.strip_suffix("\r\n").unwrap_or(body);
    let decoded = match encoding.as_str() {
        "base64" => {
            let compact: String = body.split_whitespace().collect();
            String::from_utf8_lossy(&B64.decode(compact).unwrap_or_default()).into_owned()
        }
        "quoted-printable" => quoted_printable(body),
        _ => body.to_string(),
    };
    out.push((content_type, decoded));
}

/// RFC 2045 quoted-printable: `=XX` bytes, `=` at a line's end joins it to the next.
fn quoted_printable(body: &str) -> String {
    let mut bytes = Vec::with_capacity(body.len());
    let raw = body.as_bytes();
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'=' if raw.get(i + 1..i + 3) == Some(b"\r\n") => i += 3,
            b'=' if raw.get(i + 1) == Some(&b'\n') => i += 2,
            b'=' if i + 2 < raw.len() => {
                match u8::from_str_radix(&body[i + 1..i + 3], 16) {
                    Ok(b) => bytes.push(b),
                    Err(_) => bytes.extend_from_slice(&raw[i..i + 3]),
                }
                i += 3;
            }
            b => {
                bytes.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[derive(Default)]
struct Inner {
    mails: Vec<Mail>,
    /// (part of a recipient address, reply line) for RCPT.
    refusals: Vec<(String, String)>,
    delay: Duration,
    /// New sessions get no greeting while set: a server that accepts and never answers.
    silent: bool,
    dir: Option<PathBuf>,
    written: usize,
}

/// A running sink.
pub struct SmtpSink {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    server: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl SmtpSink {
    /// Binds 127.0.0.1 on a free port.
    pub async fn start() -> SmtpSink {
        Self::start_on("127.0.0.1:0".parse().expect("an address"), None).await
    }

    /// Binds `addr`; with `dir`, writes every accepted message to `dir/<n>.eml` too.
    pub async fn start_on(addr: SocketAddr, dir: Option<PathBuf>) -> SmtpSink {
        if let Some(dir) = &dir {
            std::fs::create_dir_all(dir)
                .unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        }
        let written = dir.as_ref().map_or(0, |d| {
            std::fs::read_dir(d).map_or(0, |entries| entries.count())
        });
        let inner = Arc::new(Mutex::new(Inner {
            dir,
            written,
            ..Inner::default()
        }));
        let listener = TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("bind the SMTP sink on {addr}: {e}"));
        let addr = listener.local_addr().expect("its address");
        let sink = SmtpSink {
            addr,
            inner,
            server: Mutex::new(None),
        };
        sink.serve(listener);
        sink
    }

    fn serve(&self, listener: TcpListener) {
        let inner = self.inner.clone();
        let task = tokio::spawn(async move {
            let mut sessions = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let inner = inner.clone();
                sessions.spawn(async move {
                    while inner.lock().unwrap().silent {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    let _ = session(stream, inner).await;
                });
                while sessions.try_join_next().is_some() {}
            }
        });
        *self.server.lock().unwrap() = Some(task);
    }

    /// The `host:port` to give clients.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every message accepted so far, in order.
    pub fn mails(&self) -> Vec<Mail> {
        self.inner.lock().unwrap().mails.clone()
    }

    /// From now on, `RCPT TO` of an address containing `part` is answered `reply` (e.g. `550 5.1.1 no such
    /// user`, `451 4.3.0 try again later`).
    pub fn refuse(&self, part: &str, reply: &str) {
        self.inner
            .lock()
            .unwrap()
            .refusals
            .push((part.to_string(), reply.to_string()));
    }

    /// Waits this long before answering each message's data.
    pub fn delay(&self, delay: Duration) {
        self.inner.lock().unwrap().delay = delay;
    }

    /// While `on`, connections are accepted and never greeted: a server that never answers.
    pub fn silence(&self, on: bool) {
        self.inner.lock().unwrap().silent = on;
    }

    /// Stops listening and drops every session: the server is down.
    pub fn stop(&self) {
        if let Some(task) = self.server.lock().unwrap().take() {
            task.abort();
        }
    }

    /// Listens on the same port again.
    pub async fn resume(&self) {
        let started = std::time::Instant::now();
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) => {
                    assert!(
                        started.elapsed() < Duration::from_secs(10),
                        "rebinding the SMTP sink on {}: {e}",
                        self.addr
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        self.serve(listener);
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn session(stream: TcpStream, inner: Arc<Mutex<Inner>>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    write
        .write_all(b"220 localhost ESMTP crypto-checkout sink\r\n")
        .await?;
    let mut from = String::new();
    let mut rcpt: Vec<String> = Vec::new();
    let mut user: Option<String> = None;
    let mut line = String::new();
    loop {
        line.clear();
        if read.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_string();
        let upper = command.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") {
            "250-localhost\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-AUTH PLAIN LOGIN\r\n250 SIZE 10485760".into()
        } else if upper.starts_with("HELO") {
            "250 localhost".into()
        } else if upper.starts_with("AUTH PLAIN") {
            let initial = command.get(10..).unwrap_or("").trim().to_string();
            let response = if initial.is_empty() {
                write.write_all(b"334 \r\n").await?;
                line.clear();
                read.read_line(&mut line).await?;
                line.trim().to_string()
            } else {
                initial
            };
            // authzid \0 authcid \0 password
            let decoded = B64.decode(response).unwrap_or_default();
            let parts: Vec<&[u8]> = decoded.split(|b| *b == 0).collect();
            match parts.get(1) {
                Some(u) if parts.len() == 3 => {
                    user = Some(String::from_utf8_lossy(u).into_owned());
                    "235 2.7.0 Authentication successful".into()
                }
                _ => "535 5.7.8 Authentication credentials invalid".into(),
            }
        } else if upper.starts_with("AUTH LOGIN") {
            write.write_all(b"334 VXNlcm5hbWU6\r\n").await?;
            line.clear();
            read.read_line(&mut line).await?;
            let name =
                String::from_utf8_lossy(&B64.decode(line.trim()).unwrap_or_default()).into_owned();
            write.write_all(b"334 UGFzc3dvcmQ6\r\n").await?;
            line.clear();
            read.read_line(&mut line).await?;
            user = Some(name);
            "235 2.7.0 Authentication successful".into()
        } else if upper.starts_with("MAIL FROM:") {
            from = address(&command[10..]);
            rcpt.clear();
            "250 2.1.0 Ok".into()
        } else if upper.starts_with("RCPT TO:") {
            let to = address(&command[8..]);
            let refusal = inner
                .lock()
                .unwrap()
                .refusals
                .iter()
                .find(|(part, _)| to.contains(part.as_str()))
                .map(|(_, reply)| reply.clone());
            match refusal {
                Some(reply) => reply,
                None => {
                    rcpt.push(to);
                    "250 2.1.5 Ok".into()
                }
            }
        } else if upper == "DATA" {
            if rcpt.is_empty() {
                "554 5.5.1 No valid recipients".into()
            } else {
                write
                    .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                let mut data = Vec::new();
                loop {
                    let mut raw = Vec::new();
                    if read.read_until(b'\n', &mut raw).await? == 0 {
                        return Ok(());
                    }
                    if raw == b".\r\n" || raw == b".\n" {
                        break;
                    }
                    let unstuffed = if raw.starts_with(b"..") {
                        &raw[1..]
                    } else {
                        &raw[..]
                    };
                    data.extend_from_slice(unstuffed);
                }
                let delay = inner.lock().unwrap().delay;
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let n = record(
                    &inner,
                    Mail {
                        mail_from: std::mem::take(&mut from),
                        rcpt_to: std::mem::take(&mut rcpt),
                        auth_user: user.clone(),
                        data,
                    },
                );
                format!("250 2.0.0 Ok: queued as {n}")
            }
        } else if upper == "RSET" {
            from.clear();
            rcpt.clear();
            "250 2.0.0 Ok".into()
        } else if upper.starts_with("NOOP") {
            "250 2.0.0 Ok".into()
        } else if upper == "QUIT" {
            write.write_all(b"221 2.0.0 Bye\r\n").await?;
            return Ok(());
        } else {
            "502 5.5.2 Command not recognised".into()
        };
        write.write_all(reply.as_bytes()).await?;
        write.write_all(b"\r\n").await?;
    }
}

/// `<a@b> PARAM=…` → `a@b`.
fn address(arg: &str) -> String {
    let arg = arg.trim();
    match (arg.find('<'), arg.find('>')) {
        (Some(start), Some(end)) if start < end => arg[start + 1..end].to_string(),
        _ => arg.split_whitespace().next().unwrap_or("").to_string(),
    }
}

/// Keeps `mail` (and writes its file); returns its number.
fn record(inner: &Mutex<Inner>, mail: Mail) -> usize {
    let mut inner = inner.lock().unwrap();
    inner.written += 1;
    let n = inner.written;
    if let Some(dir) = &inner.dir {
        let path = dir.join(format!(
            "{}-{n:05}.eml",
            chrono::Utc::now().format("%Y%m%dT%H%M%S")
        ));
        if let Err(e) = std::fs::write(&path, &mail.data) {
            eprintln!("smtp sink: writing {}: {e}", path.display());
        }
    }
    inner.mails.push(mail);
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_split_and_decoded() {
        let data = "Subject: x\r\nContent-Type: multipart/alternative;\r\n boundary=\"b1\"\r\n\r\n--b1\r\n\
                    Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
                    Gr=C3=BC=C3=9Fe, a long =\r\nline\r\n--b1\r\nContent-Type: text/html; charset=utf-8\r\n\
                    Content-Transfer-Encoding: base64\r\n\r\nPHA+aGk8L3A+\r\n--b1--\r\n";
        let mail = Mail {
            mail_from: String::new(),
            rcpt_to: Vec::new(),
            auth_user: None,
            data: data.as_bytes().to_vec(),
        };
        assert_eq!(
            mail.part("text/plain").as_deref(),
            Some("Grüße, a long line")
        );
        assert_eq!(mail.part("text/html").as_deref(), Some("<p>hi</p>"));
        assert_eq!(
            mail.header("content-type").as_deref(),
            Some("multipart/alternative; boundary=\"b1\"")
        );
    }
}
