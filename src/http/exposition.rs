//! What `/metrics` serves: the last published page, rendered and compressed once per
//! publish, followed by the live process metrics. The page also holds the publish's
//! recent failures and recent HTTP errors ([`Recent`]), for the status page.
//!
//! A **page** is one publish's metrics text, with the same text deflated up to a
//! completed sync flush. A gzip scrape body is then a single gzip member made of the
//! page's deflated bytes (a non-final, byte-aligned run of blocks) followed by the
//! process metrics deflated on their own into the final block, so the committed part is
//! compressed once per publish however often it is scraped, and every gzip reader (not
//! only those that read several members) sees the whole body. The checksum of the whole
//! is combined from the two parts' checksums.
//!
//! A sync flush is complete only when the compressor returns with output room to spare
//! (zlib's rule): flate2's `Write::flush` stopped earlier for some contents, and 3 % of
//! real pages were served cut short (issue 21). The deflating here calls the compressor
//! itself until that rule holds, and a page's deflated bytes are inflated back once, at
//! publish, before they are served: a page that does not give back its own text is
//! served by compressing each scrape whole instead (slower, never wrong).

use std::io::Read;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use flate2::{Compress, Compression, FlushCompress, Status};
use prometheus::Registry;

use super::Chunks;
use crate::ledger::{HttpError, RecentFailures};

/// What the status page shows of one publish: the recent failures by code, and the
/// last HTTP error answers the proxy passed back (oldest first).
#[derive(Debug, Default)]
pub struct Recent {
    pub failures: Vec<RecentFailures>,
    pub http_errors: Vec<HttpError>,
}

/// A gzip member's header: magic, deflate, no flags, no time, no extra flags, unknown OS.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
/// An empty final block (fixed Huffman codes, just the end-of-block code): what ends a
/// sync-flushed stream when it is checked on its own.
const EMPTY_FINAL_BLOCK: [u8; 2] = [0x03, 0x00];

/// One publish's metrics, rendered and compressed once.
#[derive(Debug)]
struct Page {
    text: Bytes,
    /// `text` deflated and sync-flushed (byte-aligned, not final), checked to inflate
    /// back to `text`; `None` when it did not, and each scrape compresses the whole.
    deflated: Option<Bytes>,
    crc: crc32fast::Hasher,
    recent: Arc<Recent>,
}

impl Page {
    fn new(text: String, recent: Arc<Recent>) -> Page {
        let mut deflated = Vec::new();
        let flushed = deflate(
            &mut compressor(),
            text.as_bytes(),
            &mut deflated,
            FlushCompress::Sync,
        );
        deflated.shrink_to_fit();
        let deflated =
            (flushed && inflates_to(&deflated, text.as_bytes())).then(|| Bytes::from(deflated));
        if deflated.is_none() {
            tracing::warn!(
                bytes = text.len(),
                "A page's compressed form did not give back its text; gzip scrapes compress it whole."
            );
        }
        let mut crc = crc32fast::Hasher::new();
        crc.update(text.as_bytes());
        Page {
            text: Bytes::from(text),
            deflated,
            crc,
            recent,
        }
    }

    /// The page then `tail`, as one gzip member; `None` if the compressor failed (the
    /// scrape is then answered uncompressed).
    fn gzip(&self, tail: &[u8]) -> Option<Chunks> {
        let mut body = Chunks::from(&GZIP_HEADER[..]);
        let mut end = Vec::new();
        let deflated = match &self.deflated {
            Some(deflated) => {
                body.push(deflated.clone());
                deflate(&mut compressor(), tail, &mut end, FlushCompress::Finish)
            }
            None => {
                let mut whole = compressor();
                deflate(&mut whole, &self.text, &mut end, FlushCompress::None)
                    && deflate(&mut whole, tail, &mut end, FlushCompress::Finish)
            }
        };
        if !deflated {
            return None;
        }
        let mut crc = self.crc.clone();
        crc.update(tail);
        let size = (self.text.len() + tail.len()) as u32; // ISIZE: the size modulo 2^32
        end.extend_from_slice(&crc.finalize().to_le_bytes());
        end.extend_from_slice(&size.to_le_bytes());
        body.push(Bytes::from(end));
        Some(body)
    }
}

/// A raw deflate compressor (no zlib header), fast: a page is compressed at every publish.
fn compressor() -> Compress {
    Compress::new(Compression::fast(), false)
}

/// Deflates all of `input` onto `out` and carries out `flush`, in one call given room
/// for the worst case (stored blocks add 5 bytes per 64 KiB; an eighth more is far
/// above that). True when the compressor took every byte and finished the flush with
/// room to spare. Given less room, a sync flush that fills the output is not always
/// completed by the calls after it (3 of 100 pages in the bands around 285 KB and 573 KB
/// came out cut short, with flate2 1.1 and miniz_oxide 0.9, whatever the loop), so it
/// is never given less.
fn deflate(c: &mut Compress, input: &[u8], out: &mut Vec<u8>, flush: FlushCompress) -> bool {
    out.reserve(input.len() + input.len() / 8 + 1024);
    let before = c.total_in();
    let status = c.compress_vec(input, out, flush);
    let all_in = c.total_in() - before == input.len() as u64;
    let room = out.len() < out.capacity();
    let finished = matches!(
        (status, flush),
        (Ok(Status::StreamEnd), FlushCompress::Finish)
            | (Ok(Status::Ok), FlushCompress::None | FlushCompress::Sync)
    );
    finished && all_in && room
}

/// Whether sync-flushed `deflated` inflates to exactly `text`.
fn inflates_to(deflated: &[u8], text: &[u8]) -> bool {
    let mut back = Vec::with_capacity(text.len());
    let stream = deflated.chain(&EMPTY_FINAL_BLOCK[..]);
    let read = flate2::read::DeflateDecoder::new(stream)
        .take(text.len() as u64 + 1)
        .read_to_end(&mut back);
    read.is_ok() && back == text
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
    pub fn publish(&self, text: String, recent: Arc<Recent>) {
        let page = Arc::new(Page::new(text, recent));
        *crate::sync::write(&self.page) = page;
    }

    fn current(&self) -> Arc<Page> {
        crate::sync::read(&self.page).clone()
    }

    fn process_text(&self) -> String {
        self.process
            .as_ref()
            .map(crate::metrics::render)
            .unwrap_or_default()
    }

    /// `f` of the published recent failures and HTTP errors.
    pub fn with_recent<R>(&self, f: impl FnOnce(&Recent) -> R) -> R {
        f(&self.current().recent)
    }

    /// The scrape body: the page as it is (never copied), then the process metrics.
    pub fn text(&self) -> Chunks {
        let mut body = Chunks::from(self.current().text.clone());
        body.push(Bytes::from(self.process_text()));
        body
    }

    /// The scrape body gzipped: only the process metrics are compressed here (the whole
    /// body, for a page whose compressed form did not check out); `None` if compressing
    /// failed, and the scrape is answered as [`Exposition::text`].
    pub fn gzip(&self) -> Option<Chunks> {
        self.current().gzip(self.process_text().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn bytes(body: impl Into<Option<Chunks>>) -> Vec<u8> {
        body.into()
            .expect("compressed")
            .0
            .into_iter()
            .flat_map(|c| c.to_vec())
            .collect()
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
        let shared = GZIP_HEADER.len() + page.deflated.as_ref().unwrap().len();
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

    /// A page like those at the label caps: `lines` failure counters with pseudo-random
    /// codes, models and values (xorshift from `seed`).
    fn synthetic_page(lines: usize, seed: u64) -> String {
        let mut x = seed | 1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        (0..lines)
            .map(|_| {
                let (code, model, value) = (next() % 1000, next() % 100, next() % 100_000);
                format!(
                    "runway_task_failures_total{{failure_code=\"CODE_{code}\",model=\"m{model}\"}} {value}\n"
                )
            })
            .collect()
    }

    fn assert_round_trip(text: &str, tail: &[u8]) {
        let page = Page::new(text.to_string(), Arc::default());
        assert!(
            page.deflated.is_some(),
            "{} bytes: not precompressed",
            text.len()
        );
        let mut want = text.as_bytes().to_vec();
        want.extend_from_slice(tail);
        assert!(
            gunzip(&bytes(page.gzip(tail))) == want,
            "{} bytes, tail {}",
            text.len(),
            tail.len()
        );
    }

    /// flate2's `Write::flush` left these pages' sync flush unfinished (12 of 3,000
    /// synthetic pages of 200 to 9,200 lines, in bands around 285 KB and 573 KB): the
    /// body stopped mid-line. Every page of both bands decodes now.
    #[test]
    fn pages_in_the_bands_that_broke_the_sync_flush_decode() {
        for lines in (4070..4120).chain(8210..8260) {
            let seed = lines as u64 / 3 + 1;
            assert_round_trip(&synthetic_page(lines, seed), b"process_open_fds 7\n");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        #[test]
        fn every_page_decodes_as_one_member(
            lines in 0usize..9_200,
            seed: u64,
            tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..3_000),
        ) {
            assert_round_trip(&synthetic_page(lines, seed), &tail);
        }
    }

    #[test]
    fn a_page_that_does_not_inflate_back_is_compressed_whole_at_each_scrape() {
        let text = synthetic_page(500, 7);
        let mut deflated = Vec::new();
        assert!(deflate(
            &mut compressor(),
            text.as_bytes(),
            &mut deflated,
            FlushCompress::Sync
        ));
        assert!(inflates_to(&deflated, text.as_bytes()));
        // Cut short, or one byte changed: not the page's text.
        assert!(!inflates_to(
            &deflated[..deflated.len() - 5],
            text.as_bytes()
        ));
        let mut flipped = deflated.clone();
        flipped[deflated.len() / 2] ^= 0x10;
        assert!(!inflates_to(&flipped, text.as_bytes()));
        // Such a page is served compressed whole, and decodes.
        let mut page = Page::new(text.clone(), Arc::default());
        page.deflated = None;
        let mut want = text.into_bytes();
        want.extend_from_slice(b"process_open_fds 7\n");
        assert!(gunzip(&bytes(page.gzip(b"process_open_fds 7\n"))) == want);
    }
}
