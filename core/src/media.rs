//! Photos and signatures as the phone captures them, made fit to keep and to send over 2G:
//! decoded within limits (a crafted file cannot exhaust memory), turned upright by its EXIF
//! orientation, downscaled to a long side and a byte budget, and re-encoded — which drops every
//! metadata block of the file (GPS position, camera serial, thumbnails). The capture time and
//! position are read from the EXIF first and returned separately, to be kept as attachment
//! metadata inside the encrypted store rather than in the file.

use std::io::Cursor;

use image::imageops::FilterType;
use image::{DynamicImage, ImageDecoder, ImageReader, Limits};

/// Bounds for photos (defaults: the "about 500 KB, long side about 1600 px").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhotoLimits {
    pub max_long_side: u32,
    pub max_bytes: usize,
}

impl Default for PhotoLimits {
    fn default() -> Self {
        Self {
            max_long_side: 1600,
            max_bytes: 500 * 1024,
        }
    }
}

/// Largest file accepted as input (a 50 MP camera JPEG is ~25 MB).
pub const MAX_INPUT_BYTES: usize = 64 * 1024 * 1024;
/// Largest side a decoder may announce; beyond it the file is refused before decoding.
const MAX_INPUT_SIDE: u32 = 20_000;
/// Longest side of a stored signature or thumbprint.
const SIGNATURE_LONG_SIDE: u32 = 1200;

/// An image ready to store: its bytes carry no metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedImage {
    pub bytes: Vec<u8>,
    pub mime_type: &'static str,
    pub width: u32,
    pub height: u32,
    /// EXIF DateTimeOriginal as `YYYY-MM-DDTHH:MM:SS` (camera local time), if present.
    pub captured_at: Option<String>,
    /// EXIF GPS position as (latitude, longitude) in degrees, if present.
    pub location: Option<(f64, f64)>,
}

/// Why an image was refused; `code()` is stable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    #[error("the file is not a JPEG or PNG image that can be read")]
    Unreadable,
    #[error("the image is too large to process on a phone")]
    TooLarge,
    #[error("the image could not be made small enough")]
    CannotFit,
}

impl MediaError {
    pub fn code(&self) -> &'static str {
        match self {
            MediaError::Unreadable => "image_unreadable",
            MediaError::TooLarge => "image_too_large",
            MediaError::CannotFit => "image_cannot_fit",
        }
    }
}

/// Decodes within limits and turns the picture upright; returns it with its raw EXIF.
fn decode(input: &[u8]) -> Result<(DynamicImage, Option<Vec<u8>>), MediaError> {
    if input.len() > MAX_INPUT_BYTES {
        return Err(MediaError::TooLarge);
    }
    let mut reader = ImageReader::new(Cursor::new(input))
        .with_guessed_format()
        .map_err(|_| MediaError::Unreadable)?;
    if !matches!(
        reader.format(),
        Some(image::ImageFormat::Jpeg | image::ImageFormat::Png)
    ) {
        return Err(MediaError::Unreadable);
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_INPUT_SIDE);
    limits.max_image_height = Some(MAX_INPUT_SIDE);
    limits.max_alloc = Some(512 * 1024 * 1024);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(classify)?;
    let exif = decoder.exif_metadata().ok().flatten();
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut picture = DynamicImage::from_decoder(decoder).map_err(classify)?;
    picture.apply_orientation(orientation);
    Ok((picture, exif))
}

fn classify(e: image::ImageError) -> MediaError {
    match e {
        image::ImageError::Limits(_) => MediaError::TooLarge,
        _ => MediaError::Unreadable,
    }
}

/// Scales down (never up) so that the long side is at most `long_side`.
fn fit(picture: DynamicImage, long_side: u32) -> DynamicImage {
    if picture.width().max(picture.height()) <= long_side {
        return picture;
    }
    // Triangle (bilinear with a proper support) is the quality/speed point for photos of
    // documents and houses on a cheap phone; Lanczos costs twice as much for little here.
    picture.resize(long_side, long_side, FilterType::Triangle)
}

/// A photo: upright, at most `max_long_side`, re-encoded as JPEG within `max_bytes`.
pub fn prepare_photo(input: &[u8], limits: &PhotoLimits) -> Result<PreparedImage, MediaError> {
    let (picture, exif) = decode(input)?;
    let (captured_at, location) = exif.as_deref().map(read_exif).unwrap_or_default();
    let mut picture = fit(picture, limits.max_long_side.max(64));
    // Lower the quality first, then the size, until the budget is met.
    loop {
        let rgb = picture.to_rgb8();
        for quality in [82u8, 74, 66, 58, 50] {
            let mut bytes = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, quality)
                .encode_image(&rgb)
                .map_err(|_| MediaError::Unreadable)?;
            if bytes.len() <= limits.max_bytes {
                return Ok(PreparedImage {
                    bytes,
                    mime_type: "image/jpeg",
                    width: rgb.width(),
                    height: rgb.height(),
                    captured_at,
                    location,
                });
            }
        }
        let long = picture.width().max(picture.height());
        if long <= 256 {
            return Err(MediaError::CannotFit);
        }
        picture = fit(picture, long * 4 / 5);
    }
}

/// A signature or thumbprint: lossless PNG (strokes blur in JPEG), upright, at most 1200 px.
pub fn prepare_signature(input: &[u8]) -> Result<PreparedImage, MediaError> {
    let (picture, _) = decode(input)?;
    let picture = fit(picture, SIGNATURE_LONG_SIDE);
    let gray = picture.to_luma_alpha8();
    let mut bytes = Vec::new();
    gray.write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png)
        .map_err(|_| MediaError::Unreadable)?;
    Ok(PreparedImage {
        bytes,
        mime_type: "image/png",
        width: gray.width(),
        height: gray.height(),
        captured_at: None,
        location: None,
    })
}

/// Capture time and position from raw EXIF (a TIFF structure); anything unreadable is absent.
fn read_exif(raw: &[u8]) -> (Option<String>, Option<(f64, f64)>) {
    let Ok(exif) = exif::Reader::new().read_raw(raw.to_vec()) else {
        return (None, None);
    };
    let text = |tag| {
        exif.get_field(tag, exif::In::PRIMARY)
            .and_then(|f| match &f.value {
                exif::Value::Ascii(v) => v.first().map(|s| String::from_utf8_lossy(s).into_owned()),
                _ => None,
            })
    };
    let captured_at = text(exif::Tag::DateTimeOriginal).and_then(|s| {
        // "YYYY:MM:DD HH:MM:SS" → "YYYY-MM-DDTHH:MM:SS", checked by chrono.
        chrono::NaiveDateTime::parse_from_str(s.trim(), "%Y:%m:%d %H:%M:%S")
            .ok()
            .map(|t| t.format("%Y-%m-%dT%H:%M:%S").to_string())
    });
    let degrees = |tag| {
        exif.get_field(tag, exif::In::PRIMARY)
            .and_then(|f| match &f.value {
                exif::Value::Rational(v) if v.len() == 3 => {
                    let part = |i: usize| v.get(i).map(exif::Rational::to_f64);
                    Some(part(0)? + part(1)? / 60.0 + part(2)? / 3600.0)
                }
                _ => None,
            })
    };
    let sign = |tag, negative: &str| match text(tag) {
        Some(r) if r.trim() == negative => -1.0,
        _ => 1.0,
    };
    let location = match (
        degrees(exif::Tag::GPSLatitude),
        degrees(exif::Tag::GPSLongitude),
    ) {
        (Some(lat), Some(lon)) => {
            let lat = lat * sign(exif::Tag::GPSLatitudeRef, "S");
            let lon = lon * sign(exif::Tag::GPSLongitudeRef, "W");
            ((-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon)).then_some((lat, lon))
        }
        _ => None,
    };
    (captured_at, location)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use exif::{Field, In, Rational, Tag, Value};

    /// A camera-like JPEG: `w`×`h` of noisy content, with EXIF (orientation, time, GPS, a
    /// camera serial number) in an APP1 segment.
    fn camera_jpeg(w: u32, h: u32, orientation: u16) -> Vec<u8> {
        let mut seed = 12345u32;
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let n = (seed >> 24) as u8 / 4;
            image::Rgb([(x / 7) as u8 ^ n, (y / 5) as u8 ^ n, ((x + y) / 9) as u8])
        });
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
            .encode_image(&img)
            .unwrap();
        let fields = [
            Field {
                tag: Tag::Orientation,
                ifd_num: In::PRIMARY,
                value: Value::Short(vec![orientation]),
            },
            Field {
                tag: Tag::BodySerialNumber,
                ifd_num: In::PRIMARY,
                value: Value::Ascii(vec![b"SERIAL-9F3K2".to_vec()]),
            },
            Field {
                tag: Tag::DateTimeOriginal,
                ifd_num: In::PRIMARY,
                value: Value::Ascii(vec![b"2026:11:28 10:42:07".to_vec()]),
            },
            Field {
                tag: Tag::GPSLatitudeRef,
                ifd_num: In::PRIMARY,
                value: Value::Ascii(vec![b"N".to_vec()]),
            },
            Field {
                tag: Tag::GPSLatitude,
                ifd_num: In::PRIMARY,
                value: Value::Rational(vec![
                    Rational { num: 28, denom: 1 },
                    Rational { num: 0, denom: 1 },
                    Rational {
                        num: 4442,
                        denom: 100,
                    },
                ]),
            },
            Field {
                tag: Tag::GPSLongitudeRef,
                ifd_num: In::PRIMARY,
                value: Value::Ascii(vec![b"E".to_vec()]),
            },
            Field {
                tag: Tag::GPSLongitude,
                ifd_num: In::PRIMARY,
                value: Value::Rational(vec![
                    Rational { num: 102, denom: 1 },
                    Rational { num: 50, denom: 1 },
                    Rational {
                        num: 4412,
                        denom: 100,
                    },
                ]),
            },
        ];
        let mut writer = exif::experimental::Writer::new();
        for f in &fields {
            writer.push_field(f);
        }
        let mut tiff = Cursor::new(Vec::new());
        writer.write(&mut tiff, false).unwrap();
        let tiff = tiff.into_inner();
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend_from_slice(&tiff);
        let len = u16::try_from(app1.len() + 2).unwrap();
        let mut out = vec![0xFF, 0xD8, 0xFF, 0xE1];
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&app1);
        out.extend_from_slice(&jpeg[2..]);
        out
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn a_camera_photo_is_upright_small_and_carries_no_metadata() {
        // 90° clockwise (EXIF 6): stored 1600×1200 sideways, shown 1200×1600 upright.
        let input = camera_jpeg(1600 * 2, 1200 * 2, 6);
        assert!(contains(&input, b"SERIAL-9F3K2"));
        let out = prepare_photo(&input, &PhotoLimits::default()).unwrap();
        assert_eq!((out.width, out.height), (1200, 1600));
        assert!(out.bytes.len() <= 500 * 1024, "{} bytes", out.bytes.len());
        assert_eq!(out.mime_type, "image/jpeg");
        assert!(!contains(&out.bytes, b"Exif") && !contains(&out.bytes, b"SERIAL-9F3K2"));
        assert_eq!(out.captured_at.as_deref(), Some("2026-11-28T10:42:07"));
        let (lat, lon) = out.location.unwrap();
        assert!(
            (lat - 28.012_339).abs() < 1e-5 && (lon - 102.845_589).abs() < 1e-5,
            "{lat} {lon}"
        );
        // The result decodes, upright, at the size it claims.
        let back = image::load_from_memory(&out.bytes).unwrap();
        assert_eq!((back.width(), back.height()), (1200, 1600));
    }

    #[test]
    fn a_tight_budget_lowers_quality_then_size() {
        let input = camera_jpeg(1800, 1200, 1);
        let out = prepare_photo(
            &input,
            &PhotoLimits {
                max_long_side: 1600,
                max_bytes: 40 * 1024,
            },
        )
        .unwrap();
        assert!(out.bytes.len() <= 40 * 1024);
        assert!(
            out.width < 1600,
            "scaled down below the long side to fit: {}",
            out.width
        );
        assert_eq!(
            prepare_photo(
                &input,
                &PhotoLimits {
                    max_long_side: 1600,
                    max_bytes: 200
                }
            )
            .unwrap_err(),
            MediaError::CannotFit
        );
    }

    #[test]
    fn signatures_stay_lossless_and_small_inputs_are_not_enlarged() {
        let strokes = image::GrayAlphaImage::from_fn(600, 200, |x, y| {
            image::LumaA([0, if (x + 3 * y) % 17 == 0 { 255 } else { 0 }])
        });
        let mut png = Vec::new();
        strokes
            .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let out = prepare_signature(&png).unwrap();
        assert_eq!(
            (out.width, out.height, out.mime_type),
            (600, 200, "image/png")
        );
        assert_eq!(
            image::load_from_memory(&out.bytes)
                .unwrap()
                .to_luma_alpha8(),
            strokes
        );
    }

    #[test]
    fn bad_and_hostile_files_are_typed_errors() {
        assert_eq!(
            prepare_photo(b"not an image", &PhotoLimits::default()).unwrap_err(),
            MediaError::Unreadable
        );
        assert_eq!(
            prepare_photo(&[], &PhotoLimits::default()).unwrap_err(),
            MediaError::Unreadable
        );
        // A photo cut short (a full disk while the camera wrote it): the decoder keeps what
        // arrived, or the file is refused — never a panic.
        let mut truncated = camera_jpeg(400, 300, 1);
        truncated.truncate(truncated.len() / 2);
        if let Ok(kept) = prepare_photo(&truncated, &PhotoLimits::default()) {
            assert_eq!((kept.width, kept.height), (400, 300));
        }
        // A PNG header announcing 60000×60000 pixels: refused before any pixel is allocated.
        let mut bomb = Vec::new();
        image::GrayImage::new(1, 1)
            .write_to(&mut Cursor::new(&mut bomb), image::ImageFormat::Png)
            .unwrap();
        bomb[16..20].copy_from_slice(&60_000u32.to_be_bytes());
        bomb[20..24].copy_from_slice(&60_000u32.to_be_bytes());
        // The IHDR chunk's CRC (over its type and data), so that only the size is hostile.
        let crc = bomb[12..29].iter().fold(!0u32, |mut c, &b| {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 == 1 {
                    (c >> 1) ^ 0xEDB8_8320
                } else {
                    c >> 1
                };
            }
            c
        });
        bomb[29..33].copy_from_slice(&(!crc).to_be_bytes());
        assert_eq!(prepare_signature(&bomb).unwrap_err(), MediaError::TooLarge);
    }
}
