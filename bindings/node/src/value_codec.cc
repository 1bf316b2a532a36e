#include "value_codec.h"

#include <cstdint>

namespace singleflight::node {
namespace {

void PutBigEndian(std::string* out, uint64_t value, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) out->push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}

uint64_t GetBigEndian(std::string_view bytes, size_t at, int count) {
  uint64_t value = 0;
  for (int i = 0; i < count; ++i) value = (value << 8) | static_cast<uint8_t>(bytes[at + i]);
  return value;
}

}  // namespace

// One msgpack header per width: str8/16/32 are d9/da/db, bin8/16/32 c4/c5/c6
// (str also has fixstr, a0|n for n < 32).
std::string EncodeTyped(ValueKind kind, std::string_view payload) {
  const bool text = kind == ValueKind::kString;
  const uint8_t first_tag = text ? 0xd9 : 0xc4;
  size_t n = payload.size();
  std::string out;
  out.reserve(n + 5);
  if (text && n < 32) {
    out.push_back(static_cast<char>(0xa0 | n));
  } else {
    int width = n <= 0xff ? 0 : n <= 0xffff ? 1 : 2;  // 1, 2 or 4 length bytes
    out.push_back(static_cast<char>(first_tag + width));
    PutBigEndian(&out, n, 1 << width);
  }
  out.append(payload);
  return out;
}

bool DecodeTyped(std::string_view bytes, ValueKind* kind, std::string_view* payload) {
  if (bytes.empty()) return false;
  auto tag = static_cast<uint8_t>(bytes[0]);
  ValueKind found = ValueKind::kString;
  size_t header = 1;
  int length_bytes = 0;
  uint64_t length = 0;
  if ((tag & 0xe0) == 0xa0) {
    length = tag & 0x1f;
  } else {
    switch (tag) {
      case 0xd9: length_bytes = 1; break;
      case 0xda: length_bytes = 2; break;
      case 0xdb: length_bytes = 4; break;
      case 0xc4: found = ValueKind::kBytes, length_bytes = 1; break;
      case 0xc5: found = ValueKind::kBytes, length_bytes = 2; break;
      case 0xc6: found = ValueKind::kBytes, length_bytes = 4; break;
      default: return false;
    }
    if (bytes.size() < 1 + static_cast<size_t>(length_bytes)) return false;
    length = GetBigEndian(bytes, 1, length_bytes);
    header += length_bytes;
  }
  if (bytes.size() - header != length) return false;  // short, or trailing bytes
  *kind = found;
  *payload = bytes.substr(header);
  return true;
}

}  // namespace singleflight::node
