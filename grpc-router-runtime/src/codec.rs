//! tonic codecs: raw message bytes for the routed service, frames for the
//! register stream.

use std::marker::PhantomData;

use bytes::{Buf, BufMut, Bytes};
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use crate::wire::{DecodeFrame, EncodeFrame};

/// Passes gRPC messages through as undecoded bytes.
///
/// The router serves client calls with this codec, so it forwards each
/// client's encoded message without decoding or re-encoding it.
#[derive(Clone, Copy, Debug, Default)]
pub struct RawCodec;

/// Encoder and decoder of [`RawCodec`].
#[derive(Clone, Copy, Debug, Default)]
pub struct RawCoder;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCoder;
    type Decoder = RawCoder;

    fn encoder(&mut self) -> RawCoder {
        RawCoder
    }

    fn decoder(&mut self) -> RawCoder {
        RawCoder
    }
}

impl Encoder for RawCoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(1024, 32 * 1024)
    }
}

impl Decoder for RawCoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        // `DecodeBuf` is backed by a `BytesMut`: this splits, it does not copy.
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(1024, 32 * 1024)
    }
}

/// Encodes `E` frames and decodes `D` frames on a register stream.
#[derive(Debug)]
pub struct FrameCodec<E, D>(PhantomData<fn(E) -> D>);

impl<E, D> Default for FrameCodec<E, D> {
    fn default() -> Self {
        FrameCodec(PhantomData)
    }
}

/// Encoder and decoder of [`FrameCodec`].
#[derive(Debug)]
pub struct FrameCoder<T>(PhantomData<fn(T) -> T>);

impl<E, D> Codec for FrameCodec<E, D>
where
    E: EncodeFrame + Send + 'static,
    D: DecodeFrame + Send + 'static,
{
    type Encode = E;
    type Decode = D;
    type Encoder = FrameCoder<E>;
    type Decoder = FrameCoder<D>;

    fn encoder(&mut self) -> FrameCoder<E> {
        FrameCoder(PhantomData)
    }

    fn decoder(&mut self) -> FrameCoder<D> {
        FrameCoder(PhantomData)
    }
}

/// A register stream lives as long as its instance and most are idle: tonic
/// allocates `buffer_size` up front for every stream and grows the buffer to
/// each message anyway, so start with none; batch up to 64 KiB of ready
/// frames before yielding to the transport.
fn frame_buffer_settings() -> BufferSettings {
    BufferSettings::new(0, 64 * 1024)
}

impl<E: EncodeFrame> Encoder for FrameCoder<E> {
    type Item = E;
    type Error = Status;

    fn encode(&mut self, item: E, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.reserve(item.encoded_len());
        item.encode(dst);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        frame_buffer_settings()
    }
}

impl<D: DecodeFrame> Decoder for FrameCoder<D> {
    type Item = D;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<D>, Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        D::decode(bytes)
            .map(Some)
            .map_err(|e| Status::internal(format!("register stream: {e}")))
    }

    fn buffer_settings(&self) -> BufferSettings {
        frame_buffer_settings()
    }
}

/// The largest register-stream message for frames of at most `max_frame`
/// payload bytes: the payload plus envelope overhead (a protocol fact both
/// sides use to size their decoders).
pub(crate) fn frame_limit(max_frame: u32) -> usize {
    usize::try_from(max_frame)
        .unwrap_or(usize::MAX)
        .saturating_add(crate::defaults::FRAME_OVERHEAD)
}
