#include "envelope.h"

#include <chrono>
#include <exception>
#include <limits>
#include <msgpack.hpp>

#include "token.h"

namespace singleflight::internal {
namespace {

// Bounds for the msgpack parser. A v1 envelope is one flat map of 7 entries;
// the slack lets later versions add fields (even nested ones) while a hostile
// header can never make the parser allocate more than a few KiB up front.
constexpr size_t kMaxMapPairs = 32;
constexpr size_t kMaxArrayItems = 32;
constexpr size_t kMaxDepth = 4;

// Appends msgpack output straight into the result string. write() must not
// be const: msgpack's packer only takes a non-const member pointer.
struct StringWriter {
  std::string* out;
  // NOLINTNEXTLINE(readability-make-member-function-const)
  void write(const char* data, size_t size) { out->append(data, size); }
};

// Cuts s to at most max bytes without splitting a UTF-8 sequence.
std::string_view TruncateUtf8(std::string_view s, size_t max) {
  if (s.size() <= max) return s;
  size_t end = max;
  while (end > 0 && (static_cast<unsigned char>(s[end]) & 0xC0) == 0x80) --end;
  return s.substr(0, end);
}

void PackStr(msgpack::packer<StringWriter>& pk, std::string_view s) {
  pk.pack_str(static_cast<uint32_t>(s.size()));
  pk.pack_str_body(s.data(), static_cast<uint32_t>(s.size()));
}

void PackBin(msgpack::packer<StringWriter>& pk, std::string_view s) {
  pk.pack_bin(static_cast<uint32_t>(s.size()));
  pk.pack_bin_body(s.data(), static_cast<uint32_t>(s.size()));
}

Status Invalid(std::string message) {
  return Status(Code::kInvalidArgument, "envelope: " + std::move(message));
}

// STR and BIN objects point into the input instead of being copied: the
// object never outlives DecodeEnvelope, and the limits above are checked by
// the parser before this is asked.
bool ReferenceInput(msgpack::type::object_type, size_t, void*) {
  return true;
}

// The known fields as found in the map; null when absent.
struct Fields {
  const msgpack::object* version = nullptr;
  const msgpack::object* ok = nullptr;
  const msgpack::object* value = nullptr;
  const msgpack::object* error_code = nullptr;
  const msgpack::object* error = nullptr;
  const msgpack::object* token = nullptr;
  const msgpack::object* produced_at = nullptr;
  const msgpack::object* released = nullptr;
};

const msgpack::object** Slot(Fields& f, std::string_view name) {
  if (name == "v") return &f.version;
  if (name == "ok") return &f.ok;
  if (name == "val") return &f.value;
  if (name == "ec") return &f.error_code;
  if (name == "err") return &f.error;
  if (name == "tok") return &f.token;
  if (name == "at") return &f.produced_at;
  if (name == "rel") return &f.released;
  return nullptr;
}

Status CollectFields(const msgpack::object& root, Fields* fields) {
  if (root.type != msgpack::type::MAP) return Invalid("not a msgpack map");
  for (uint32_t i = 0; i < root.via.map.size; ++i) {
    const msgpack::object_kv& kv = root.via.map.ptr[i];
    if (kv.key.type != msgpack::type::STR) continue;  // not ours: ignore
    std::string_view name(kv.key.via.str.ptr, kv.key.via.str.size);
    const msgpack::object** slot = Slot(*fields, name);
    if (slot == nullptr) continue;  // a field of a later version: ignore
    if (*slot != nullptr) return Invalid("duplicate field \"" + std::string(name) + "\"");
    *slot = &kv.val;
  }
  return Status::Ok();
}

bool IsUint(const msgpack::object* o) {
  return o != nullptr && o->type == msgpack::type::POSITIVE_INTEGER;
}

std::string_view BinView(const msgpack::object& o) {
  return {o.via.bin.ptr, o.via.bin.size};
}
std::string_view StrView(const msgpack::object& o) {
  return {o.via.str.ptr, o.via.str.size};
}

// Type-checks every known field that is present, whatever "ok" says, so a
// writer that sends nonsense is caught rather than half-read.
Status CheckTypes(const Fields& f) {
  if (f.released && f.released->type != msgpack::type::BOOLEAN) {
    return Invalid("\"rel\" must be a bool");
  }
  bool notice = f.released != nullptr && f.released->via.boolean;
  if (!notice && (f.ok == nullptr || f.ok->type != msgpack::type::BOOLEAN)) {
    return Invalid("\"ok\" must be a bool");
  }
  if (f.value && f.value->type != msgpack::type::BIN) return Invalid("\"val\" must be bin");
  if (f.error_code && f.error_code->type != msgpack::type::STR) {
    return Invalid("\"ec\" must be str");
  }
  if (f.error && f.error->type != msgpack::type::STR) return Invalid("\"err\" must be str");
  if (f.token == nullptr || f.token->type != msgpack::type::BIN) {
    return Invalid("\"tok\" must be bin");
  }
  if (!IsUint(f.produced_at)) return Invalid("\"at\" must be an unsigned integer");
  return Status::Ok();
}

Status CheckVersion(const Fields& f) {
  if (!IsUint(f.version)) return Invalid("\"v\" (version) must be an unsigned integer");
  uint64_t version = f.version->via.u64;
  if (version != Envelope::kVersion) {
    return Invalid("unsupported version " + std::to_string(version) + " (this reader knows " +
                   std::to_string(Envelope::kVersion) + ")");
  }
  return Status::Ok();
}

Status ReadSuccess(const Fields& f, const DecodeLimits& limits, Envelope* e) {
  if (f.value == nullptr) return Invalid("\"val\" is missing from an ok envelope");
  std::string_view value = BinView(*f.value);
  if (value.size() > limits.max_value_bytes) {
    return Status(Code::kTooLarge, "envelope: value is " + std::to_string(value.size()) +
                                       " bytes, over max_value_bytes (" +
                                       std::to_string(limits.max_value_bytes) + ")");
  }
  e->value.assign(value);
  return Status::Ok();
}

Status ReadFailure(const Fields& f, Envelope* e) {
  if (f.error_code == nullptr) return Invalid("\"ec\" is missing from an error envelope");
  if (f.error == nullptr) return Invalid("\"err\" is missing from an error envelope");
  std::string_view code = StrView(*f.error_code);
  std::string_view message = StrView(*f.error);
  if (code.empty() || code.size() > kMaxErrorCodeBytes) {
    return Invalid("\"ec\" must be 1.." + std::to_string(kMaxErrorCodeBytes) + " bytes");
  }
  if (message.size() > kMaxErrorBytes) {
    return Invalid("\"err\" is longer than " + std::to_string(kMaxErrorBytes) + " bytes");
  }
  e->error_code.assign(code);
  e->error.assign(message);
  return Status::Ok();
}

Status Interpret(const msgpack::object& root, const DecodeLimits& limits, Envelope* e) {
  Fields f;
  Status s = CollectFields(root, &f);
  // The version decides what every other field means, so it goes first.
  if (s.ok()) s = CheckVersion(f);
  if (s.ok()) s = CheckTypes(f);
  if (!s.ok()) return s;
  std::string_view token = BinView(*f.token);
  if (token.size() != kTokenBytes) {
    return Invalid("\"tok\" must be " + std::to_string(kTokenBytes) + " bytes");
  }
  e->token.assign(token);
  e->produced_at_ms = f.produced_at->via.u64;
  if (f.released != nullptr && f.released->via.boolean) {
    e->released = true;
    return Status::Ok();
  }
  e->ok = f.ok->via.boolean;
  return e->ok ? ReadSuccess(f, limits, e) : ReadFailure(f, e);
}

}  // namespace

std::string EncodeEnvelope(const Envelope& e) {
  std::string error = e.ok ? std::string() : std::string(TruncateUtf8(e.error, kMaxErrorBytes));
  std::string out;
  out.reserve(64 + e.value.size() + e.token.size() + e.error_code.size() + error.size());
  StringWriter writer{&out};
  msgpack::packer<StringWriter> pk(writer);
  pk.pack_map(e.ok ? 5 : 6);
  PackStr(pk, "v");
  pk.pack_uint32(Envelope::kVersion);
  PackStr(pk, "ok");
  if (e.ok) {
    pk.pack_true();
    PackStr(pk, "val");
    PackBin(pk, e.value);
  } else {
    pk.pack_false();
    PackStr(pk, "ec");
    PackStr(pk, e.error_code);
    PackStr(pk, "err");
    PackStr(pk, error);
  }
  PackStr(pk, "tok");
  PackBin(pk, e.token);
  PackStr(pk, "at");
  pk.pack_uint64(e.produced_at_ms);
  return out;
}

uint64_t UnixNowMs() noexcept {
  using std::chrono::duration_cast;
  using std::chrono::milliseconds;
  using std::chrono::system_clock;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

std::string EncodeReleaseNotice(std::string_view token, uint64_t at_ms) {
  std::string out;
  StringWriter writer{&out};
  msgpack::packer<StringWriter> pk(writer);
  pk.pack_map(4);
  PackStr(pk, "v");
  pk.pack_uint32(Envelope::kVersion);
  PackStr(pk, "rel");
  pk.pack_true();
  PackStr(pk, "tok");
  PackBin(pk, token);
  PackStr(pk, "at");
  pk.pack_uint64(at_ms);
  return out;
}

DecodeLimits DecodeLimits::ForMaxValue(size_t max_value_bytes) {
  DecodeLimits limits;
  limits.max_value_bytes = max_value_bytes;
  const size_t max = std::numeric_limits<size_t>::max();
  limits.max_envelope_bytes =
      max_value_bytes > max - kEnvelopeSlackBytes ? max : max_value_bytes + kEnvelopeSlackBytes;
  return limits;
}

Status DecodeEnvelope(std::string_view bytes, const DecodeLimits& limits, Envelope* out) noexcept {
  if (bytes.size() > limits.max_envelope_bytes) {
    return Status(Code::kTooLarge, "envelope: " + std::to_string(bytes.size()) +
                                       " bytes, over the limit of " +
                                       std::to_string(limits.max_envelope_bytes));
  }
  try {
    // No STR/BIN/EXT can be longer than the input; the parser also checks
    // that the bytes are there before it looks at them.
    const size_t max_blob = bytes.size();
    msgpack::unpack_limit bounds(kMaxArrayItems, kMaxMapPairs, max_blob, max_blob, max_blob,
                                 kMaxDepth);
    size_t offset = 0;
    msgpack::object_handle handle =
        msgpack::unpack(bytes.data(), bytes.size(), offset, ReferenceInput, nullptr, bounds);
    if (offset != bytes.size()) {
      return Invalid(std::to_string(bytes.size() - offset) + " trailing bytes after the map");
    }
    Envelope decoded;
    Status s = Interpret(handle.get(), limits, &decoded);
    if (s.ok()) *out = std::move(decoded);
    return s;
  } catch (const std::exception& e) {
    // unpack_error for malformed or over-limit input, type_error (a
    // bad_cast), bad_alloc: all mean "drop this message".
    return Invalid(std::string("malformed msgpack: ") + e.what());
  }
}

Code EnvelopeErrorCode(std::string_view error_code) noexcept {
  if (error_code == "timeout") return Code::kTimeout;
  if (error_code == "too_large") return Code::kTooLarge;
  return Code::kProducerError;
}

}  // namespace singleflight::internal
