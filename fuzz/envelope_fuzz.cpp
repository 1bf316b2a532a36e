// The envelope decoder on arbitrary bytes: anyone can PUBLISH on a flight's
// channel. Checks that decoding never crashes, hangs or balloons (ASan, the
// fuzzer's rss/timeout limits), fails only with the documented codes and
// leaves its output untouched then, and that whatever it accepts survives a
// re-encode: decode(encode(e)) == e, and encoding is canonical.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "envelope.h"
#include "fuzz_check.h"

namespace {

using singleflight::Code;
using singleflight::Status;
using singleflight::internal::DecodeEnvelope;
using singleflight::internal::DecodeLimits;
using singleflight::internal::EncodeEnvelope;
using singleflight::internal::Envelope;

// Small enough that the fuzzer reaches the size limits with short inputs.
constexpr size_t kMaxValueBytes = 4096;

bool Same(const Envelope& a, const Envelope& b) {
  return a.ok == b.ok && a.value == b.value && a.error_code == b.error_code && a.error == b.error &&
         a.token == b.token && a.produced_at_ms == b.produced_at_ms;
}

bool Untouched(const Envelope& e) {
  return Same(e, Envelope{});
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  const DecodeLimits limits = DecodeLimits::ForMaxValue(kMaxValueBytes);
  Envelope decoded;
  Status status = DecodeEnvelope(bytes, limits, &decoded);
  if (!status.ok()) {
    FUZZ_CHECK(status.code() == Code::kInvalidArgument || status.code() == Code::kTooLarge);
    FUZZ_CHECK(Untouched(decoded));
    return 0;
  }
  FUZZ_CHECK(size <= limits.max_envelope_bytes);
  FUZZ_CHECK(decoded.value.size() <= kMaxValueBytes);
  FUZZ_CHECK(decoded.ok || !decoded.error_code.empty());

  std::string encoded = EncodeEnvelope(decoded);
  FUZZ_CHECK(encoded.size() <= limits.max_envelope_bytes);
  Envelope again;
  FUZZ_CHECK(DecodeEnvelope(encoded, limits, &again).ok());
  FUZZ_CHECK(Same(decoded, again));
  FUZZ_CHECK(EncodeEnvelope(again) == encoded);
  return 0;
}
