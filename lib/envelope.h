// Envelope: the one message format of the wire protocol. A leader stores it
// as the flight's result and publishes it on the flight's channel; followers
// in every process decode it. docs/protocol.md ("The envelope") is the
// language-neutral description; this header is the C++ side of it.
//
// The encoding is a msgpack MAP whose keys are short STR names:
//
//   "v"   uint  format version, kVersion (required)
//   "ok"  bool  true: "val" holds the value; false: "ec"/"err" hold an error
//   "val" bin   the value bytes (required when ok)
//   "ec"  str   error code, e.g. "producer_error" (required when !ok)
//   "err" str   error message, at most kMaxErrorBytes (required when !ok)
//   "tok" bin   the producer's lock token, kTokenBytes bytes (required)
//   "at"  uint  unix epoch milliseconds when produced (required)
//   "rel" bool  true: a release notice, not a result — the lock of "tok" was
//               released without a result; followers re-check at once. A
//               notice has no "ok"; a v1 reader drops it as malformed (and
//               re-checks, which is the right thing to do).
//
// Decoding treats its input as hostile (anyone can PUBLISH on a channel):
// every size is bounded before anything is allocated, allocation is at most
// a small multiple of the input size, and nothing throws.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "singleflight/status.h"

namespace singleflight::internal {

struct Envelope {
  // A reader drops an envelope of any other version and re-checks the result
  // key by GET; a writer of a new format bumps this.
  static constexpr uint32_t kVersion = 1;

  bool ok = false;
  std::string value;            // when ok: the value bytes (msgpack BIN)
  std::string error_code;       // when !ok: "producer_error" | "too_large" | "timeout"
  std::string error;            // when !ok: the message (truncated to kMaxErrorBytes)
  std::string token;            // the producer's lock token (kTokenBytes, BIN)
  uint64_t produced_at_ms = 0;  // unix epoch ms when produced
  bool released = false;        // a release notice: only token and time are set
};

// Error messages are for humans; a longer one is cut (at a UTF-8 boundary)
// when encoded, so that a failure envelope stays small.
inline constexpr size_t kMaxErrorBytes = 4096;
inline constexpr size_t kMaxErrorCodeBytes = 64;
// Room in an envelope for everything but the value: field names, token,
// timestamps, an error message, and fields that a later version may add.
inline constexpr size_t kEnvelopeSlackBytes = size_t{16} * 1024;

// Encodes e. Never fails. Only the fields that belong to e.ok are written.
// Expects value.size() < 4 GiB (the library's max_value_bytes is far lower).
std::string EncodeEnvelope(const Envelope& e);

// Unix epoch milliseconds: the "at" of envelopes written now.
uint64_t UnixNowMs() noexcept;

// The message Release publishes: {"v":1, "rel":true, "tok":token, "at":at_ms}.
std::string EncodeReleaseNotice(std::string_view token, uint64_t at_ms);

struct DecodeLimits {
  size_t max_value_bytes = 0;     // a longer value is kTooLarge
  size_t max_envelope_bytes = 0;  // a longer input is kTooLarge, unparsed

  // The limits for a group whose values are at most max_value_bytes.
  static DecodeLimits ForMaxValue(size_t max_value_bytes);
};

// Decodes bytes into *out. On any problem returns a non-ok Status and leaves
// *out untouched: kTooLarge when the input or the value is over its limit,
// kInvalidArgument for everything else (malformed msgpack, trailing bytes,
// wrong types, missing fields, unknown version); the message says which.
// Map entries with unknown names are ignored, so a later version may add
// fields without breaking this reader.
Status DecodeEnvelope(std::string_view bytes, const DecodeLimits& limits, Envelope* out) noexcept;

// The status code that followers report for a failure envelope's "ec". An
// unknown code (from a newer writer) reads as kProducerError.
Code EnvelopeErrorCode(std::string_view error_code) noexcept;

}  // namespace singleflight::internal
