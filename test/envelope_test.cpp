#include "envelope.h"

#include <gtest/gtest.h>

#include <functional>
#include <msgpack.hpp>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "token.h"

namespace singleflight::internal {
namespace {

using namespace std::string_literals;

const DecodeLimits kLimits = DecodeLimits::ForMaxValue(1024);

Envelope ValueEnvelope(std::string value) {
  Envelope e;
  e.ok = true;
  e.value = std::move(value);
  e.token = std::string(kTokenBytes, '\x5a');
  e.produced_at_ms = 1700000000123;
  return e;
}

Envelope ErrorEnvelope(std::string code, std::string message) {
  Envelope e;
  e.ok = false;
  e.error_code = std::move(code);
  e.error = std::move(message);
  e.token = std::string(kTokenBytes, '\x01');
  e.produced_at_ms = 42;
  return e;
}

Status Decode(const std::string& bytes, Envelope* out = nullptr) {
  Envelope scratch;
  return DecodeEnvelope(bytes, kLimits, out ? out : &scratch);
}

// Builds a msgpack map field by field, for envelopes the encoder would never
// write.
class MapBuilder {
 public:
  using Packer = msgpack::packer<msgpack::sbuffer>;

  MapBuilder& Field(const std::string& name, std::function<void(Packer&)> pack_value) {
    fields_.emplace_back(name, std::move(pack_value));
    return *this;
  }
  // The fields of a valid v1 ok envelope; tests then override some.
  MapBuilder& ValidOk() {
    return Uint("v", 1)
        .Bool("ok", true)
        .Bin("val", "x")
        .Bin("tok", std::string(16, 't'))
        .Uint("at", 7);
  }
  MapBuilder& Uint(const std::string& name, uint64_t v) {
    return Field(name, [v](Packer& p) { p.pack_uint64(v); });
  }
  MapBuilder& Int(const std::string& name, int64_t v) {
    return Field(name, [v](Packer& p) { p.pack_int64(v); });
  }
  MapBuilder& Bool(const std::string& name, bool v) {
    return Field(name, [v](Packer& p) { v ? p.pack_true() : p.pack_false(); });
  }
  MapBuilder& Bin(const std::string& name, std::string v) {
    return Field(name, [v = std::move(v)](Packer& p) {
      p.pack_bin(static_cast<uint32_t>(v.size()));
      p.pack_bin_body(v.data(), static_cast<uint32_t>(v.size()));
    });
  }
  MapBuilder& Str(const std::string& name, std::string v) {
    return Field(name, [v = std::move(v)](Packer& p) { p.pack(v); });
  }
  // Drops the first field called name (to build "missing field" cases).
  MapBuilder& Without(const std::string& name) {
    for (auto it = fields_.begin(); it != fields_.end(); ++it) {
      if (it->first == name) {
        fields_.erase(it);
        break;
      }
    }
    return *this;
  }
  // Replaces the first field called name.
  MapBuilder& Replace(const std::string& name, std::function<void(Packer&)> pack_value) {
    for (auto& field : fields_) {
      if (field.first == name) {
        field.second = std::move(pack_value);
        break;
      }
    }
    return *this;
  }
  std::string Build() const {
    msgpack::sbuffer buffer;
    Packer p(buffer);
    p.pack_map(static_cast<uint32_t>(fields_.size()));
    for (const auto& [name, pack_value] : fields_) {
      p.pack(name);
      pack_value(p);
    }
    return std::string(buffer.data(), buffer.size());
  }

 private:
  std::vector<std::pair<std::string, std::function<void(Packer&)>>> fields_;
};

void ExpectInvalid(const std::string& bytes, const std::string& why_contains) {
  Status s = Decode(bytes);
  EXPECT_EQ(s.code(), Code::kInvalidArgument) << s.ToString();
  EXPECT_NE(s.message().find(why_contains), std::string::npos) << s.ToString();
}

// --- round trips -----------------------------------------------------------

TEST(Envelope, RoundTripsBinaryValue) {
  Envelope in = ValueEnvelope("\0\xff\x00\x80 binary \xc1"s);
  Envelope out;
  ASSERT_TRUE(Decode(EncodeEnvelope(in), &out).ok());
  EXPECT_TRUE(out.ok);
  EXPECT_EQ(out.value, in.value);
  EXPECT_EQ(out.token, in.token);
  EXPECT_EQ(out.produced_at_ms, in.produced_at_ms);
  EXPECT_TRUE(out.error_code.empty());
}

TEST(Envelope, RoundTripsEmptyValue) {
  Envelope out;
  ASSERT_TRUE(Decode(EncodeEnvelope(ValueEnvelope("")), &out).ok());
  EXPECT_TRUE(out.ok);
  EXPECT_EQ(out.value, "");
}

TEST(Envelope, RoundTripsValueAtTheLimit) {
  Envelope out;
  ASSERT_TRUE(Decode(EncodeEnvelope(ValueEnvelope(std::string(1024, '\xff'))), &out).ok());
  EXPECT_EQ(out.value.size(), 1024u);
}

TEST(Envelope, RoundTripsError) {
  Envelope out;
  ASSERT_TRUE(Decode(EncodeEnvelope(ErrorEnvelope("producer_error", "db down")), &out).ok());
  EXPECT_FALSE(out.ok);
  EXPECT_EQ(out.error_code, "producer_error");
  EXPECT_EQ(out.error, "db down");
  EXPECT_EQ(out.token, std::string(kTokenBytes, '\x01'));
  EXPECT_EQ(out.produced_at_ms, 42u);
  EXPECT_TRUE(out.value.empty());
}

TEST(Envelope, RoundTripsMaxTimestamp) {
  Envelope in = ValueEnvelope("v");
  in.produced_at_ms = UINT64_MAX;
  Envelope out;
  ASSERT_TRUE(Decode(EncodeEnvelope(in), &out).ok());
  EXPECT_EQ(out.produced_at_ms, UINT64_MAX);
}

std::string Hex(std::string_view bytes) {
  static const char kDigits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out += kDigits[c >> 4];
    out += kDigits[c & 15];
  }
  return out;
}

TEST(Envelope, EncodesTheDocumentedLayout) {
  // The example bytes of docs/protocol.md, for other implementations to
  // compare against.
  Envelope e = ValueEnvelope("hi");
  e.token = std::string(16, '\0');
  e.produced_at_ms = 1;
  EXPECT_EQ(Hex(EncodeEnvelope(e)),
            "85"                                            // map of 5 pairs
            "a17601"                                        // "v": 1
            "a26f6bc3"                                      // "ok": true
            "a376616cc4026869"                              // "val": bin "hi"
            "a3746f6bc41000000000000000000000000000000000"  // "tok": bin(16)
            "a2617401");                                    // "at": 1
}

TEST(Envelope, TruncatesLongErrorsAtAUtf8Boundary) {
  // 'é' is two bytes; an odd cut would split one.
  std::string message = "x";
  while (message.size() < kMaxErrorBytes + 10) message += "\xc3\xa9";
  Envelope out;
  ASSERT_TRUE(Decode(EncodeEnvelope(ErrorEnvelope("producer_error", message)), &out).ok());
  EXPECT_EQ(out.error.size(), kMaxErrorBytes - 1);
  EXPECT_EQ(out.error, message.substr(0, kMaxErrorBytes - 1));
}

TEST(Envelope, UnknownFieldsAreIgnored) {
  std::string bytes = MapBuilder()
                          .ValidOk()
                          .Str("future", "field")
                          .Field("nested",
                                 [](MapBuilder::Packer& p) {
                                   p.pack_array(2);
                                   p.pack_map(1);
                                   p.pack("k");
                                   p.pack(1);
                                   p.pack_nil();
                                 })
                          .Build();
  Envelope out;
  ASSERT_TRUE(Decode(bytes, &out).ok());
  EXPECT_EQ(out.value, "x");
}

TEST(Envelope, NonStringKeysAreIgnored) {
  std::string bytes = MapBuilder().ValidOk().Build();
  bytes[0] = '\x86';  // one more pair: 7 => nil
  bytes += "\x07\xc0";
  EXPECT_TRUE(Decode(bytes).ok());
}

TEST(Envelope, FailureLeavesOutputUntouched) {
  Envelope out = ValueEnvelope("before");
  EXPECT_FALSE(DecodeEnvelope("\xc1", kLimits, &out).ok());
  EXPECT_EQ(out.value, "before");
}

TEST(Envelope, ErrorCodesMapToStatusCodes) {
  EXPECT_EQ(EnvelopeErrorCode("producer_error"), Code::kProducerError);
  EXPECT_EQ(EnvelopeErrorCode("timeout"), Code::kTimeout);
  EXPECT_EQ(EnvelopeErrorCode("too_large"), Code::kTooLarge);
  EXPECT_EQ(EnvelopeErrorCode("from_the_future"), Code::kProducerError);
}

TEST(Envelope, LimitsForMaxValueAddSlackWithoutOverflow) {
  EXPECT_EQ(DecodeLimits::ForMaxValue(100).max_envelope_bytes, 100 + kEnvelopeSlackBytes);
  EXPECT_EQ(DecodeLimits::ForMaxValue(SIZE_MAX).max_envelope_bytes, SIZE_MAX);
}

// --- sizes -------------------------------------------------------------------

TEST(Envelope, OversizedValueIsTooLarge) {
  Status s = Decode(EncodeEnvelope(ValueEnvelope(std::string(1025, 'v'))));
  EXPECT_EQ(s.code(), Code::kTooLarge) << s.ToString();
  EXPECT_NE(s.message().find("1025"), std::string::npos) << s.ToString();
}

TEST(Envelope, OversizedInputIsRefusedBeforeParsing) {
  // Not even msgpack: the size alone decides.
  std::string bytes(kLimits.max_envelope_bytes + 1, '\xc1');
  EXPECT_EQ(Decode(bytes).code(), Code::kTooLarge);
}

// --- hostile input -----------------------------------------------------------

TEST(Envelope, EmptyInputIsInvalid) {
  ExpectInvalid("", "malformed");
}

TEST(Envelope, TruncatedAtEveryLengthIsInvalid) {
  for (const Envelope& e : {ValueEnvelope("some value"), ErrorEnvelope("timeout", "late")}) {
    std::string full = EncodeEnvelope(e);
    for (size_t len = 0; len < full.size(); ++len) {
      EXPECT_FALSE(Decode(full.substr(0, len)).ok()) << "length " << len;
    }
  }
}

TEST(Envelope, HugeArrayHeaderIsRefused) {
  // array32 claiming 2^28 elements: with msgpack's default limits this
  // alone would allocate gigabytes.
  EXPECT_FALSE(Decode("\xdd\x10\x00\x00\x00"s).ok());
  EXPECT_FALSE(Decode("\xdf\x10\x00\x00\x00"s).ok());  // map32, same idea
}

TEST(Envelope, HugeArrayInsideAFieldIsRefused) {
  std::string bytes = MapBuilder()
                          .ValidOk()
                          .Field("x", [](MapBuilder::Packer& p) { p.pack_array(1u << 28); })
                          .Build();
  ExpectInvalid(bytes, "overflow");
}

TEST(Envelope, HugeDeclaredBinAndStrAreRefused) {
  EXPECT_FALSE(Decode("\xc6\xff\xff\xff\xff"s).ok());
  EXPECT_FALSE(Decode("\xdb\xff\xff\xff\xff"s).ok());
  EXPECT_FALSE(Decode("\xc7\xff\x01"s).ok());  // ext8
  // A "val" that claims 4 GiB inside an otherwise valid envelope.
  std::string huge = MapBuilder()
                         .ValidOk()
                         .Replace("val", [](MapBuilder::Packer& p) { p.pack_bin(0xffffffffu); })
                         .Build();
  EXPECT_FALSE(Decode(huge).ok());
}

TEST(Envelope, DeepNestingIsRefused) {
  std::string deep(10000, '\x91');  // [[[[...]]]]
  deep += '\x01';
  EXPECT_FALSE(Decode(deep).ok());
  std::string bytes = MapBuilder()
                          .ValidOk()
                          .Field("deep",
                                 [](MapBuilder::Packer& p) {
                                   for (int i = 0; i < 8; ++i) p.pack_array(1);
                                   p.pack_nil();
                                 })
                          .Build();
  ExpectInvalid(bytes, "depth");
}

TEST(Envelope, TooManyFieldsAreRefused) {
  MapBuilder builder;
  builder.ValidOk();
  for (int i = 0; i < 40; ++i) builder.Uint("extra" + std::to_string(i), 1);
  ExpectInvalid(builder.Build(), "overflow");
}

TEST(Envelope, TrailingBytesAreRefused) {
  ExpectInvalid(EncodeEnvelope(ValueEnvelope("v")) + "\x00"s, "trailing");
}

TEST(Envelope, UnknownVersionIsRefused) {
  ExpectInvalid(MapBuilder().ValidOk().Replace("v", [](auto& p) { p.pack(2); }).Build(),
                "version 2");
  ExpectInvalid(MapBuilder().ValidOk().Replace("v", [](auto& p) { p.pack(0); }).Build(),
                "version 0");
}

TEST(Envelope, VersionIsCheckedBeforeOtherFields) {
  // A v2 writer may drop or retype v1 fields; the reader must say "version".
  ExpectInvalid(MapBuilder().Uint("v", 2).Str("ok", "yes").Build(), "version");
}

TEST(Envelope, NotAMapIsRefused) {
  ExpectInvalid("\x93\x01\x02\x03", "not a msgpack map");
  ExpectInvalid("\xc0", "not a msgpack map");
}

TEST(Envelope, MissingFieldsAreRefused) {
  ExpectInvalid(MapBuilder().ValidOk().Without("v").Build(), "\"v\"");
  ExpectInvalid(MapBuilder().ValidOk().Without("ok").Build(), "\"ok\"");
  ExpectInvalid(MapBuilder().ValidOk().Without("val").Build(), "\"val\"");
  ExpectInvalid(MapBuilder().ValidOk().Without("tok").Build(), "\"tok\"");
  ExpectInvalid(MapBuilder().ValidOk().Without("at").Build(), "\"at\"");
  auto failure = [] {
    MapBuilder b;
    b.Uint("v", 1).Bool("ok", false).Str("ec", "timeout").Str("err", "m");
    b.Bin("tok", std::string(16, 't')).Uint("at", 1);
    return b;
  };
  EXPECT_TRUE(Decode(failure().Build()).ok());
  ExpectInvalid(failure().Without("ec").Build(), "\"ec\"");
  ExpectInvalid(failure().Without("err").Build(), "\"err\"");
}

TEST(Envelope, WrongTypesAreRefused) {
  ExpectInvalid(MapBuilder().ValidOk().Replace("v", [](auto& p) { p.pack("1"); }).Build(), "\"v\"");
  ExpectInvalid(MapBuilder().ValidOk().Replace("v", [](auto& p) { p.pack(-1); }).Build(), "\"v\"");
  ExpectInvalid(MapBuilder().ValidOk().Replace("ok", [](auto& p) { p.pack(1); }).Build(), "\"ok\"");
  ExpectInvalid(MapBuilder().ValidOk().Replace("val", [](auto& p) { p.pack("x"); }).Build(),
                "\"val\"");
  ExpectInvalid(MapBuilder().ValidOk().Replace("val", [](auto& p) { p.pack_nil(); }).Build(),
                "\"val\"");
  ExpectInvalid(
      MapBuilder().ValidOk().Replace("tok", [](auto& p) { p.pack(std::string(16, 't')); }).Build(),
      "\"tok\"");
  ExpectInvalid(MapBuilder().ValidOk().Replace("at", [](auto& p) { p.pack(-5); }).Build(),
                "\"at\"");
  ExpectInvalid(MapBuilder().ValidOk().Replace("at", [](auto& p) { p.pack(1.5); }).Build(),
                "\"at\"");
  ExpectInvalid(
      MapBuilder().ValidOk().Str("ec", "x").Replace("ec", [](auto& p) { p.pack(3); }).Build(),
      "\"ec\"");
}

TEST(Envelope, WrongTokenLengthIsRefused) {
  ExpectInvalid(MapBuilder()
                    .ValidOk()
                    .Replace("tok",
                             [](auto& p) {
                               p.pack_bin(15);
                               p.pack_bin_body("123456789012345", 15);
                             })
                    .Build(),
                "\"tok\"");
}

TEST(Envelope, DuplicateFieldsAreRefused) {
  ExpectInvalid(MapBuilder().ValidOk().Bool("ok", false).Build(), "duplicate");
}

TEST(Envelope, BadErrorFieldsAreRefused) {
  auto failure = [](std::string code, std::string message) {
    MapBuilder b;
    b.Uint("v", 1).Bool("ok", false).Str("ec", std::move(code)).Str("err", std::move(message));
    return b.Bin("tok", std::string(16, 't')).Uint("at", 1).Build();
  };
  ExpectInvalid(failure("", "m"), "\"ec\"");
  ExpectInvalid(failure(std::string(kMaxErrorCodeBytes + 1, 'c'), "m"), "\"ec\"");
  ExpectInvalid(failure("producer_error", std::string(kMaxErrorBytes + 1, 'm')), "\"err\"");
}

TEST(Envelope, RandomBytesNeverDecode) {
  std::mt19937 rng(12345);
  for (int i = 0; i < 2000; ++i) {
    std::string bytes(rng() % 64, '\0');
    for (char& c : bytes) c = static_cast<char>(rng());
    EXPECT_FALSE(Decode(bytes).ok());
  }
}

TEST(Envelope, RandomMutationsNeverCrash) {
  const std::string valid = EncodeEnvelope(ValueEnvelope("a value of some length"));
  std::mt19937 rng(54321);
  int decoded = 0;
  for (int i = 0; i < 500; ++i) {
    std::string bytes = valid;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int j = 0; j < edits; ++j) {
      size_t at = rng() % bytes.size();
      switch (rng() % 3) {
        case 0: bytes[at] = static_cast<char>(rng()); break;
        case 1: bytes.erase(at, 1); break;
        case 2: bytes.insert(at, 1, static_cast<char>(rng())); break;
      }
      if (bytes.empty()) bytes = "\x00"s;
    }
    Envelope out;
    Status s = DecodeEnvelope(bytes, kLimits, &out);
    // A mutation may land in the value bytes and still be valid; what
    // matters is a clean answer either way.
    if (s.ok()) {
      ++decoded;
      EXPECT_LE(out.value.size(), kLimits.max_value_bytes);
    } else {
      EXPECT_FALSE(s.message().empty());
    }
  }
  EXPECT_LT(decoded, 500);
}

// --- token ---------------------------------------------------------------------

TEST(Envelope, RandomTokensAreSixteenFreshBytes) {
  std::string a = RandomToken();
  std::string b = RandomToken();
  EXPECT_EQ(a.size(), kTokenBytes);
  EXPECT_EQ(b.size(), kTokenBytes);
  EXPECT_NE(a, b);
}

}  // namespace
}  // namespace singleflight::internal

namespace singleflight::internal {
namespace {

// docs/protocol.md: readers accept any msgpack integer encoding of a
// non-negative "v"/"at" — int8..int64 included — and refuse a negative one.
std::string HandMade(const std::string& version_bytes, const std::string& at_bytes) {
  std::string out = "\x85";  // map of 5
  out += "\xa1v" + version_bytes;
  out += "\xa2ok\xc3";
  out += std::string("\xa3val\xc4\x02hi", 8);
  out += std::string("\xa3tok\xc4\x10", 6) + std::string(16, 't');
  out +=
      "\xa2"
      "at" +
      at_bytes;
  return out;
}

TEST(Envelope, AcceptsSignedEncodingsOfNonNegativeIntegers) {
  Envelope e;
  ASSERT_TRUE(
      DecodeEnvelope(HandMade(std::string("\xd0\x01", 2), std::string("\xd3\0\0\0\0\0\0\0\x07", 9)),
                     DecodeLimits::ForMaxValue(1024), &e)
          .ok());
  EXPECT_EQ(e.value, "hi");
  EXPECT_EQ(e.produced_at_ms, 7u);
}

TEST(Envelope, RefusesANegativeTimestamp) {
  Envelope e;
  EXPECT_FALSE(DecodeEnvelope(HandMade(std::string("\x01", 1), std::string("\xff", 1)),
                              DecodeLimits::ForMaxValue(1024), &e)
                   .ok());
}

TEST(Envelope, ReleaseNoticeDecodesAsANotice) {
  Envelope e;
  ASSERT_TRUE(DecodeEnvelope(EncodeReleaseNotice(std::string(16, 'r'), 5),
                             DecodeLimits::ForMaxValue(1024), &e)
                  .ok());
  EXPECT_TRUE(e.released);
  EXPECT_EQ(e.token, std::string(16, 'r'));
}

}  // namespace
}  // namespace singleflight::internal
