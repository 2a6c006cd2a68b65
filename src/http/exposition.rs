//! What `/metrics` serves: the last published page, rendered and compressed once per
//! publish, followed by the live process metrics. The page also holds the publish's
//! recent failures, for the status page.
//!
//! A **page** is one publish's metrics text, with the same text deflated up to a sync
//! flush. A gzip scrape body is then a single gzip member made of the page's deflated
//! bytes (a non-final, byte-aligned run of blocks) followed by the process metrics
//! deflated on their own into the final block, so the committed part is compressed once
//! per publish however often it is scraped, and every gzip reader (not only those that
//! read several members) sees the whole body. The checksum of the whole is combined from
//! the two parts' checksums.

use std::io::Write;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use flate2::write::DeflateEncoder;
use flate2::Compression;
use prometheus::Registry;

use super::Chunks;
use crate::ledger::RecentFailures;

/// A gzip member's header: magic, deflate, no flags, no time, no extra flags, unknown OS.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// One publish's metrics, rendered and compressed once.
#[derive(Debug)]
struct Page {
    text: Bytes,
    /// `text` deflated and sync-flushed: byte-aligned, not final.
    deflated: Bytes,
    crc: crc32fast::Hasher,
    recent: Arc<Vec<RecentFailures>>,
}

impl Page {
    fn new(text: String, recent: Arc<Vec<RecentFailures>>) -> Page {
        let mut encoder = deflater(text.len() / 8);
        // Writing to a Vec cannot fail.
        let _ = encoder.write_all(text.as_bytes());
        // A sync flush ends on a byte boundary without a final block.
        let _ = encoder.flush();
        let deflated = Bytes::from(std::mem::take(encoder.get_mut()));
        let mut crc = crc32fast::Hasher::new();
        crc.update(text.as_bytes());
        Page {
            text: Bytes::from(text),
            deflated,
            crc,
            recent,
        }
    }

    /// The page then `tail`, as one gzip member.
    fn gzip(&self, tail: &[u8]) -> Chunks {
        let mut last = deflater(tail.len() / 4 + 16);
        let _ = last.write_all(tail);
        let mut end = last.finish().unwrap_or_default();
        let mut crc = self.crc.clone();
        crc.update(tail);
        let size = (self.text.len() + tail.len()) as u32; // ISIZE: the size modulo 2^32
        end.extend_from_slice(&crc.finalize().to_le_bytes());
        end.extend_from_slice(&size.to_le_bytes());
        let mut body = Chunks::from(&GZIP_HEADER[..]);
        body.push(self.deflated.clone());
        body.push(Bytes::from(end));
        body
    }
}

fn deflater(capacity: usize) -> DeflateEncoder<Vec<u8>> {
    DeflateEncoder::new(Vec::with_capacity(capacity), Compression::fast())
}

/// The page being served and the process metrics; the publisher swaps the page whole,
/// so a scrape shows one publish, never half of the next.
pub struct Exposition {
    page: RwLock<Arc<Page>>,
    process: Option<Registry>,
}

impl Exposition {
    /// An empty page, and the process metrics to follow every page.
    pub fn new(process: Option<Registry>) -> Exposition {
        Exposition {
            page: RwLock::new(Arc::new(Page::new(String::new(), Arc::default()))),
            process,
        }
    }

    /// Serves `text` and `recent` from now on, compressed once here.
    pub fn publish(&self, text: String, recent: Arc<Vec<RecentFailures>>) {
        let page = Arc::new(Page::new(text, recent));
        *self.page.write().unwrap_or_else(|e| e.into_inner()) = page;
    }

    fn current(&self) -> Arc<Page> {
        self.page.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn process_text(&self) -> String {
        self.process
            .as_ref()
            .map(crate::metrics::render)
            .unwrap_or_default()
    }

    /// `f` of the published recent failures.
    pub fn with_recent<R>(&self, f: impl FnOnce(&[RecentFailures]) -> R) -> R {
        f(&self.current().recent)
    }

    /// The scrape body: the page as it is (never copied), then the process metrics.
    pub fn text(&self) -> Chunks {
        let mut body = Chunks::from(self.current().text.clone());
        body.push(Bytes::from(self.process_text()));
        body
    }

    /// The scrape body gzipped: only the process metrics are compressed here.
    pub fn gzip(&self) -> Chunks {
        self.current().gzip(self.process_text().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn bytes(body: Chunks) -> Vec<u8> {
        body.0.into_iter().flat_map(|c| c.to_vec()).collect()
    }

    fn gunzip(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        // A single-member reader: the whole body must be one member.
        flate2::read::GzDecoder::new(body)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn a_page_and_any_tail_make_one_gzip_member_of_both() {
        let big: String = (0..200_000)
            .map(|i| format!("runway_x{{code=\"{}\"}} {i}\n", i % 97))
            .collect();
        let binary: String = (0..=0x7f_u8).map(char::from).cycle().take(70_000).collect();
        let texts = [String::new(), "a 1\n".to_string(), big, binary];
        let tails: [&[u8]; 3] = [b"", b"process_open_fds 7\n", &[0xff; 5000]];
        for text in &texts {
            let page = Page::new(text.clone(), Arc::default());
            for tail in tails {
                let body = bytes(page.gzip(tail));
                let mut want = text.as_bytes().to_vec();
                want.extend_from_slice(tail);
                assert_eq!(
                    gunzip(&body),
                    want,
                    "text {} tail {}",
                    text.len(),
                    tail.len()
                );
            }
        }
    }

    #[test]
    fn scrapes_of_one_page_reuse_its_compressed_bytes() {
        let page = Page::new("runway_tasks_total 3\n".repeat(1000), Arc::default());
        let (a, b) = (bytes(page.gzip(b"x 1\n")), bytes(page.gzip(b"x 22\n")));
        let shared = GZIP_HEADER.len() + page.deflated.len();
        assert_eq!(a[..shared], b[..shared]);
        assert_ne!(a, b);
    }

    #[test]
    fn the_system_gzip_reads_the_body_too() {
        let Ok(mut child) = std::process::Command::new("gzip")
            .arg("-dc")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
        else {
            panic!("gzip is part of every Debian system");
        };
        let page = Page::new("runway_tasks_total 3\n".repeat(100), Arc::default());
        let body = bytes(page.gzip(b"process_open_fds 7\n"));
        child.stdin.take().unwrap().write_all(&body).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        assert!(out.stdout.ends_with(b"3\nprocess_open_fds 7\n"));
        assert_eq!(out.stdout.len(), 21 * 100 + 19);
    }

    #[test]
    fn a_scrape_sees_the_page_published_last() {
        let exposition = Exposition::new(None);
        assert_eq!(bytes(exposition.text()), b"");
        exposition.publish("a 1\n".into(), Arc::default());
        exposition.publish("a 2\n".into(), Arc::default());
        assert_eq!(bytes(exposition.text()), b"a 2\n");
        assert_eq!(gunzip(&bytes(exposition.gzip())), b"a 2\n");
    }
}
