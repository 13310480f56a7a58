//! Counting server frames without copying them: an incremental header scanner that keeps
//! only a partial header between reads and skips payload bytes, plus a latency sampler that
//! reads the publisher's timestamp from a frame when the whole frame is in the buffer.

/// Per-connection scanning state.
#[derive(Default, Debug)]
pub struct Scanner {
    header: [u8; 10],
    header_len: usize,
    /// Payload bytes of the current frame still to skip.
    remaining: usize,
    /// First bytes of a text frame's payload, gathered across reads to classify it.
    prefix: [u8; 5],
    prefix_len: usize,
    /// How many prefix bytes classification still waits for (0 = classified).
    prefix_want: usize,
    /// Events (non-`op` text frames) seen.
    pub events: u64,
    /// Control notices (`{"op":…}`) seen.
    pub notices: u64,
    /// A close frame arrived.
    pub closed: bool,
}

fn needed(h: &[u8]) -> Option<usize> {
    if h.len() < 2 {
        return None;
    }
    Some(match h[1] & 0x7F {
        126 => 4,
        127 => 10,
        _ => 2,
    })
}

fn payload_len(h: &[u8]) -> usize {
    match h[1] & 0x7F {
        126 => u16::from_be_bytes([h[2], h[3]]) as usize,
        127 => u64::from_be_bytes([h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]]) as usize,
        n => n as usize,
    }
}

impl Scanner {
    fn classify(&mut self, prefix: &[u8]) -> bool {
        let notice = prefix.starts_with(b"{\"op\"");
        if notice {
            self.notices += 1;
        } else {
            self.events += 1;
        }
        !notice
    }

    /// Scans `data`; for each complete event frame within `data`, `sample` may be called
    /// with its payload (every `every`-th event).
    pub fn scan(&mut self, data: &[u8], every: u64, mut sample: impl FnMut(&[u8])) {
        let mut i = 0;
        while i < data.len() {
            if self.remaining > 0 {
                let k = self.remaining.min(data.len() - i);
                if self.prefix_want > 0 {
                    let take = self.prefix_want.min(k);
                    self.prefix[self.prefix_len..self.prefix_len + take]
                        .copy_from_slice(&data[i..i + take]);
                    self.prefix_len += take;
                    self.prefix_want -= take;
                    if self.prefix_want == 0 {
                        let prefix = self.prefix;
                        self.classify(&prefix[..self.prefix_len]);
                    }
                }
                self.remaining -= k;
                i += k;
                continue;
            }
            // Collect the header (it may straddle reads).
            while self.header_len < needed(&self.header[..self.header_len]).unwrap_or(2) {
                if i == data.len() {
                    return;
                }
                self.header[self.header_len] = data[i];
                self.header_len += 1;
                i += 1;
            }
            let h = &self.header[..self.header_len];
            let opcode = h[0] & 0x0F;
            let len = payload_len(h);
            self.header_len = 0;
            self.remaining = len;
            match opcode {
                0x1 => {
                    let body = &data[i..data.len().min(i + len)];
                    let want = len.min(5);
                    if body.len() >= want {
                        // Classify now; sample when the whole frame is in this read.
                        if self.classify(&body[..want])
                            && body.len() == len
                            && every > 0
                            && self.events % every == 0
                        {
                            sample(body);
                        }
                    } else {
                        self.prefix_len = 0;
                        self.prefix_want = want;
                    }
                }
                0x8 => self.closed = true,
                _ => {}
            }
        }
    }
}

/// Finds the publisher timestamp `"t":N` in an event's JSON.
pub fn timestamp(body: &[u8]) -> Option<u64> {
    let at = body.windows(5).position(|w| w == b"{\"t\":")? + 5;
    let digits = body[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&body[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::frame::{encode, OpCode};

    #[test]
    fn counts_frames_across_any_split() {
        let mut wire = Vec::new();
        for i in 0..50u64 {
            let body = format!(
                "{{\"id\":{i},\"payload\":{{\"t\":{},\"pad\":\"{}\"}}}}",
                1000 + i,
                "x".repeat(i as usize * 7)
            );
            wire.extend_from_slice(&encode(OpCode::Text, body.as_bytes()));
        }
        wire.extend_from_slice(&encode(OpCode::Text, b"{\"op\":\"dropped\"}"));
        for chunk in [1, 2, 3, 7, 64, 1000, wire.len()] {
            let mut s = Scanner::default();
            let mut samples = Vec::new();
            for c in wire.chunks(chunk) {
                s.scan(c, 1, |b| samples.push(timestamp(b).unwrap()));
            }
            assert_eq!((s.events, s.notices), (50, 1), "chunk {chunk}");
            assert!(samples.iter().all(|t| (1000..1050).contains(t)));
            if chunk == wire.len() {
                assert_eq!(samples.len(), 50);
            }
        }
    }
}
