// Key validation and naming on arbitrary prefixes and keys. Checks the
// protocol's promises (lib/key_naming.h): validation says exactly what it
// documents; the lock, result and channel of a flight share one Redis Cluster
// hash tag (computed the way Redis does); escaping is injective (it has an
// inverse), so two keys never share a flight; and no flight name collides
// with the invalidation channel.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_check.h"
#include "key_naming.h"

namespace {

using namespace singleflight::internal;

// Redis Cluster's rule (cluster.c keyHashSlot): the tag is what lies between
// the first '{' and the first '}' after it, if that is non-empty; otherwise
// the whole key is hashed.
std::string_view HashTag(std::string_view name) {
  size_t open = name.find('{');
  if (open == std::string_view::npos) return name;
  size_t close = name.find('}', open + 1);
  if (close == std::string_view::npos || close == open + 1) return name;
  return name.substr(open + 1, close - open - 1);
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The inverse of EscapeKey; fails (returns false) on anything EscapeKey
// cannot have produced.
bool Unescape(std::string_view escaped, std::string* out) {
  out->clear();
  for (size_t i = 0; i < escaped.size(); ++i) {
    char c = escaped[i];
    if (c == '{' || c == '}') return false;
    if (c != '%') {
      *out += c;
      continue;
    }
    if (i + 2 >= escaped.size()) return false;
    int hi = HexDigit(escaped[i + 1]);
    int lo = HexDigit(escaped[i + 2]);
    if (hi < 0 || lo < 0) return false;
    char decoded = static_cast<char>(hi * 16 + lo);
    if (decoded != '%' && decoded != '{' && decoded != '}') return false;
    *out += decoded;
    i += 2;
  }
  return true;
}

void CheckValidation(std::string_view key, size_t max_key_bytes) {
  bool ok = ValidateKey(key, max_key_bytes).ok();
  FUZZ_CHECK(ok == (!key.empty() && key.size() <= max_key_bytes));
}

void CheckPrefix(std::string_view prefix) {
  bool ok = ValidatePrefix(prefix).ok();
  bool expected = prefix.size() <= kMaxPrefixBytes && prefix.find_first_of("{}") == prefix.npos;
  FUZZ_CHECK(ok == expected);
}

void CheckNames(std::string_view prefix, std::string_view key) {
  std::string escaped = EscapeKey(key);
  std::string unescaped;
  FUZZ_CHECK(Unescape(escaped, &unescaped));
  FUZZ_CHECK(unescaped == key);

  FlightKeys names = NameFlight(prefix, key);
  std::string base = std::string(prefix) + "{" + escaped + "}";
  FUZZ_CHECK(names.lock == base + ":lock");
  FUZZ_CHECK(names.result == base + ":result");
  FUZZ_CHECK(names.channel == base + ":ch");
  // One slot for the three, and the tag is exactly the escaped key.
  FUZZ_CHECK(HashTag(names.lock) == escaped);
  FUZZ_CHECK(HashTag(names.result) == escaped);
  FUZZ_CHECK(HashTag(names.channel) == escaped);

  std::string invalidation = InvalidationChannel(prefix);
  FUZZ_CHECK(invalidation != names.channel && invalidation != names.lock &&
             invalidation != names.result);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  size_t max_key_bytes = in.ConsumeIntegralInRange<size_t>(0, 64);
  std::string prefix = in.ConsumeRandomLengthString(300);
  std::string a = in.ConsumeRandomLengthString(200);
  std::string b = in.ConsumeRemainingBytesAsString();

  CheckPrefix(prefix);
  CheckValidation(a, max_key_bytes);
  CheckValidation(b, max_key_bytes);
  if (!ValidatePrefix(prefix).ok()) return 0;
  for (const std::string& key : {a, b}) {
    if (ValidateKey(key, SIZE_MAX).ok()) CheckNames(prefix, key);
  }
  // Injective: different keys, different names (and the converse).
  if (!a.empty() && !b.empty()) {
    FUZZ_CHECK((EscapeKey(a) == EscapeKey(b)) == (a == b));
    FUZZ_CHECK((NameFlight(prefix, a).channel == NameFlight(prefix, b).channel) == (a == b));
  }
  return 0;
}
