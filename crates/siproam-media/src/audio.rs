//! Where sent audio comes from and where received audio goes.
//!
//! These are plain structs the driver calls between session inputs: a
//! source gives one 20 ms [`Frame`] per call, a sink takes the samples
//! [`MediaSession::poll_audio`] hands out. Reading and writing files happens
//! here, outside the sans-IO session, when the driver opens, pulls from,
//! writes to or finalizes them.
//!
//! [`MediaSession::poll_audio`]: crate::MediaSession::poll_audio

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, Write};
use std::path::Path;

use crate::g711::{Frame, FRAME_SAMPLES, SAMPLE_RATE};

/// Why a WAV file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WavError {
    /// The file could not be opened, read or written.
    #[error("WAV I/O: {0}")]
    Io(#[source] std::io::Error),
    /// The bytes are not a WAV file this reader understands.
    #[error("malformed WAV file: {0}")]
    Malformed(&'static str),
    /// A WAV file, but not 16-bit PCM mono at 8 kHz.
    #[error(
        "unsupported WAV format: {channels} channel(s), {sample_rate} Hz, {bits_per_sample}-bit {}; need 1 channel, 8000 Hz, 16-bit PCM",
        if *.float { "float" } else { "integer" }
    )]
    UnsupportedFormat {
        /// Channels in the file.
        channels: u16,
        /// Sample rate of the file.
        sample_rate: u32,
        /// Bits per sample of the file.
        bits_per_sample: u16,
        /// Whether the samples are floating point.
        float: bool,
    },
    /// The file holds no samples, so there is nothing to loop.
    #[error("the WAV file holds no samples")]
    Empty,
}

impl From<hound::Error> for WavError {
    fn from(e: hound::Error) -> Self {
        match e {
            hound::Error::IoError(io) => WavError::Io(io),
            hound::Error::FormatError(why) => WavError::Malformed(why),
            hound::Error::TooWide => WavError::Malformed("sample too wide"),
            hound::Error::UnfinishedSample => WavError::Malformed("unfinished sample"),
            hound::Error::Unsupported => WavError::Malformed("unsupported WAV feature"),
            hound::Error::InvalidSampleFormat => WavError::Malformed("invalid sample format"),
        }
    }
}

/// Something that produces 20 ms frames of 8 kHz audio to send.
pub trait AudioSource {
    /// The next frame.
    fn next_frame(&mut self) -> Frame;
}

/// Something that consumes received 8 kHz audio.
pub trait AudioSink {
    /// Takes the next samples.
    fn write(&mut self, samples: &[i16]) -> Result<(), WavError>;
}

/// Silence, forever.
#[derive(Debug, Clone, Copy, Default)]
pub struct SilenceSource;

impl AudioSource for SilenceSource {
    fn next_frame(&mut self) -> Frame {
        [0; FRAME_SAMPLES]
    }
}

/// A sine tone.
///
/// A tone whose frequency is a whole number of hertz repeats exactly
/// every `8000 / gcd(8000, f)` samples: that period is computed once and
/// replayed, so a call's source costs a copy per frame, not 160 sines (the
/// calls benchmark found the sines to be the largest cost per call).
#[derive(Debug, Clone)]
pub struct ToneSource {
    /// Phase advance per sample, in cycles.
    step: f64,
    /// Current phase, in cycles (0 ≤ phase < 1).
    phase: f64,
    amplitude: f64,
    /// One exact period, when the frequency allows it, followed by its
    /// first frame's worth again, so that any frame is one slice of it.
    table: Vec<i16>,
    /// The period's length in samples (0 without a table).
    period: usize,
    /// Next index into `table` (below `period`).
    position: usize,
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl ToneSource {
    /// A tone of `frequency_hz` (clamped to 0–4000 Hz, the 8 kHz band) and
    /// peak `amplitude` (clamped to 0–32767).
    pub fn new(frequency_hz: f64, amplitude: i16) -> Self {
        let nyquist = f64::from(SAMPLE_RATE) / 2.0;
        let frequency = if frequency_hz.is_finite() {
            frequency_hz.clamp(0.0, nyquist)
        } else {
            0.0
        };
        let mut tone = ToneSource {
            step: frequency / f64::from(SAMPLE_RATE),
            phase: 0.0,
            amplitude: f64::from(amplitude.max(0)),
            table: Vec::new(),
            period: 0,
            position: 0,
        };
        if frequency > 0.0 && frequency.fract() == 0.0 {
            let period = u64::from(SAMPLE_RATE) / gcd(u64::from(SAMPLE_RATE), frequency as u64);
            let period = usize::try_from(period).unwrap_or(0);
            let one: Vec<i16> = (0..period).map(|_| tone.sample()).collect();
            tone.table = one
                .iter()
                .copied()
                .cycle()
                .take(period + FRAME_SAMPLES)
                .collect();
            tone.period = period;
            tone.phase = 0.0;
        }
        tone
    }

    fn sample(&mut self) -> i16 {
        let v = self.amplitude * (std::f64::consts::TAU * self.phase).sin();
        self.phase = (self.phase + self.step).fract();
        // |v| <= 32767: the cast neither wraps nor saturates.
        v.round() as i16
    }
}

impl AudioSource for ToneSource {
    fn next_frame(&mut self) -> Frame {
        let mut frame = [0i16; FRAME_SAMPLES];
        if self.table.is_empty() {
            for sample in frame.iter_mut() {
                *sample = self.sample();
            }
            return frame;
        }
        if let Some(samples) = self.table.get(self.position..self.position + FRAME_SAMPLES) {
            frame.copy_from_slice(samples);
        }
        self.position = (self.position + FRAME_SAMPLES) % self.period.max(1);
        frame
    }
}

/// A WAV file (16-bit PCM, mono, 8 kHz) held in memory and played in a loop.
#[derive(Debug, Clone)]
pub struct WavSource {
    samples: Vec<i16>,
    position: usize,
}

impl WavSource {
    /// Reads the whole file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, WavError> {
        let file = File::open(path).map_err(WavError::Io)?;
        Self::from_reader(BufReader::new(file))
    }

    /// Reads a whole WAV stream.
    pub fn from_reader<R: Read>(reader: R) -> Result<Self, WavError> {
        let reader = hound::WavReader::new(reader)?;
        let spec = reader.spec();
        if spec.channels != 1
            || spec.sample_rate != SAMPLE_RATE
            || spec.bits_per_sample != 16
            || spec.sample_format != hound::SampleFormat::Int
        {
            return Err(WavError::UnsupportedFormat {
                channels: spec.channels,
                sample_rate: spec.sample_rate,
                bits_per_sample: spec.bits_per_sample,
                float: spec.sample_format == hound::SampleFormat::Float,
            });
        }
        let samples = reader
            .into_samples::<i16>()
            .collect::<Result<Vec<i16>, hound::Error>>()?;
        Self::from_samples(samples)
    }

    /// Loops the given 8 kHz samples.
    pub fn from_samples(samples: Vec<i16>) -> Result<Self, WavError> {
        if samples.is_empty() {
            return Err(WavError::Empty);
        }
        Ok(WavSource {
            samples,
            position: 0,
        })
    }

    /// The samples in one loop.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Always false: an empty file is refused when opened.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

impl AudioSource for WavSource {
    fn next_frame(&mut self) -> Frame {
        let mut frame = [0i16; FRAME_SAMPLES];
        for sample in frame.iter_mut() {
            if self.position >= self.samples.len() {
                self.position = 0;
            }
            *sample = self.samples.get(self.position).copied().unwrap_or(0);
            self.position += 1;
        }
        frame
    }
}

/// Writes received audio to a WAV file (16-bit PCM, mono, 8 kHz).
///
/// Call [`WavSink::finalize`] to write the header's lengths and see any
/// error; dropping the sink finalizes it too, silently.
pub struct WavSink<W: Write + Seek = BufWriter<File>> {
    writer: hound::WavWriter<W>,
}

impl<W: Write + Seek> std::fmt::Debug for WavSink<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WavSink")
            .field("samples", &self.writer.len())
            .finish()
    }
}

fn wav_spec() -> hound::WavSpec {
    hound::WavSpec {
        channels: 1,
        sample_rate: SAMPLE_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    }
}

impl WavSink<BufWriter<File>> {
    /// Creates (or truncates) the file at `path`.
    pub fn create(path: impl AsRef<Path>) -> Result<Self, WavError> {
        Ok(WavSink {
            writer: hound::WavWriter::create(path, wav_spec())?,
        })
    }
}

impl<W: Write + Seek> WavSink<W> {
    /// Writes a WAV stream into `writer`.
    pub fn new(writer: W) -> Result<Self, WavError> {
        Ok(WavSink {
            writer: hound::WavWriter::new(writer, wav_spec())?,
        })
    }

    /// Samples written so far.
    pub fn samples_written(&self) -> u32 {
        self.writer.len()
    }

    /// Completes the header and flushes.
    pub fn finalize(self) -> Result<(), WavError> {
        self.writer.finalize()?;
        Ok(())
    }
}

impl<W: Write + Seek> AudioSink for WavSink<W> {
    fn write(&mut self, samples: &[i16]) -> Result<(), WavError> {
        for s in samples {
            self.writer.write_sample(*s)?;
        }
        Ok(())
    }
}

/// Discards received audio.
#[derive(Debug, Clone, Copy, Default)]
pub struct NullSink;

impl AudioSink for NullSink {
    fn write(&mut self, _samples: &[i16]) -> Result<(), WavError> {
        Ok(())
    }
}

#[cfg(test)]
mod tone_tests {
    use super::*;

    #[test]
    fn the_period_table_matches_the_computed_tone() {
        for hz in [1000.0, 440.0, 697.5, 3999.0] {
            let mut fast = ToneSource::new(hz, 8000);
            let mut slow = ToneSource {
                table: Vec::new(),
                ..ToneSource::new(hz, 8000)
            };
            slow.phase = 0.0;
            for _ in 0..120 {
                assert_eq!(fast.next_frame(), slow.next_frame(), "{hz} Hz");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use std::io::Cursor;

    #[test]
    fn tone_has_its_amplitude_and_period() {
        let mut tone = ToneSource::new(1000.0, 10_000);
        let frame = tone.next_frame();
        // 1 kHz at 8 kHz: 8 samples per cycle.
        assert_eq!(frame[0], 0);
        assert_eq!(frame[2], 10_000);
        assert_eq!(frame[6], -10_000);
        assert_eq!(frame[8], 0);
        assert_eq!(frame[10], 10_000);
    }

    #[test]
    fn wav_round_trip_and_loop() {
        let mut buf = Cursor::new(Vec::new());
        let mut sink = WavSink::new(&mut buf).unwrap();
        let samples: Vec<i16> = (0..100).collect();
        sink.write(&samples).unwrap();
        assert_eq!(sink.samples_written(), 100);
        sink.finalize().unwrap();
        let bytes = buf.into_inner();
        let mut source = WavSource::from_reader(Cursor::new(bytes)).unwrap();
        assert_eq!(source.len(), 100);
        let frame = source.next_frame();
        assert_eq!(frame[0], 0);
        assert_eq!(frame[99], 99);
        assert_eq!(frame[100], 0, "loops");
        assert_eq!(frame[159], 59);
        let frame = source.next_frame();
        assert_eq!(frame[0], 60);
    }

    #[test]
    fn rejects_other_formats() {
        let mut buf = Cursor::new(Vec::new());
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 44_100,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::new(&mut buf, spec).unwrap();
        w.write_sample(1i16).unwrap();
        w.write_sample(1i16).unwrap();
        w.finalize().unwrap();
        let err = WavSource::from_reader(Cursor::new(buf.into_inner())).unwrap_err();
        assert!(matches!(
            err,
            WavError::UnsupportedFormat {
                channels: 2,
                sample_rate: 44_100,
                bits_per_sample: 16,
                float: false
            }
        ));
        assert!(matches!(
            WavSource::from_reader(Cursor::new(b"RIFF".to_vec())),
            Err(WavError::Io(_) | WavError::Malformed(_))
        ));
        assert!(matches!(
            WavSource::from_samples(Vec::new()),
            Err(WavError::Empty)
        ));
    }
}
