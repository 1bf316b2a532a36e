// Typed values: Do<T> on top of the bytes API, for any T with a msgpack-cxx
// adaptor (a struct with MSGPACK_DEFINE_MAP, std::string, integers, vectors,
// maps, ...).
//
//   struct User {
//     std::string name;
//     int age = 0;
//     MSGPACK_DEFINE_MAP(name, age)  // (no ";" after it: -Wpedantic)
//   };
//   singleflight::Do<User>(group, "user:42",
//       [](const singleflight::ProducerContext&, singleflight::TypedDone<User> done) {
//         done(User{"ada", 36});
//       },
//       [](const singleflight::TypedResult<User>& r) {
//         if (r.ok()) Use(r.value()); else Log(r.status.ToString());
//       });
//
// Dependencies: this is the one public header that includes <msgpack.hpp>.
// Using it needs msgpack-cxx (Debian: libmsgpack-cxx-dev, header-only) on the
// include path and either MSGPACK_NO_BOOST defined for every file that
// includes it (what this project does) or Boost installed. The rest of the
// API (group.h and friends) needs neither, and the library binary does not
// depend on it.
//
// Semantics: exactly those of Group::Do (one callback per accepted call, from
// the loop, never inside Do), plus:
// - The leader encodes the value once, with msgpack::pack; every process of
//   the fleet then shares those bytes (the value is what the envelope
//   carries, so another language can read it as plain msgpack).
// - Each process decodes the bytes into T once per flight for all of the
//   flight's callers that ask for the same T: every caller gets the same
//   immutable object. (The last object decoded for each T is kept per thread
//   so that the next caller of the same flight, or an L1 hit on the same
//   entry, reuses it; decoding another value of that T replaces it.)
// - Decoding treats the bytes as untrusted (another process, another
//   version, or another T may have written them): every msgpack size is
//   bounded by the size of the bytes, trailing bytes are refused, and nothing
//   throws into the loop. Bytes that are not a T end the call with
//   kInvalidArgument ("typed: ..."): two callers disagree on what type a key
//   holds, and retrying will not help until the stored value expires or is
//   Forget()-ed. The result's source still says where the bytes came from.
// - A value that cannot be encoded (an adaptor that throws) fails the flight
//   with kProducerError, as a producer failure would.
#pragma once

#if !defined(MSGPACK_NO_BOOST) && defined(__has_include)
#if !__has_include(<boost/assert.hpp>)
#error "singleflight/typed.h includes <msgpack.hpp>: define MSGPACK_NO_BOOST or install Boost"
#endif
#endif

#include <exception>
#include <functional>
#include <memory>
#include <msgpack.hpp>
#include <string>
#include <string_view>
#include <utility>

#include "singleflight/group.h"

namespace singleflight {

// What a typed callback receives: Result with the value decoded into a T.
template <class T>
struct TypedResult {
  Status status;
  Source source = Source::kNone;
  bool shared = false;  // as Result::shared
  // The decoded value, shared immutably by the flight's callers in this
  // process. Null when the status is not ok. Holding it keeps it alive.
  std::shared_ptr<const T> value_ptr;

  bool ok() const { return status.ok(); }
  // The value; only when ok().
  const T& value() const { return *value_ptr; }
};

// The producer's way to report a T. Copyable; the rules of Done apply (the
// first call wins, later ones return false).
template <class T>
class TypedDone {
 public:
  explicit TypedDone(Done done) : done_(std::move(done)) {}

  // Encodes `value` with msgpack and makes it the flight's result. An
  // encoding failure fails the flight instead (kProducerError).
  bool operator()(const T& value) const;
  // Failure: every caller of the flight gets kProducerError with `message`.
  bool Fail(std::string message) const { return done_.Fail(std::move(message)); }

 private:
  Done done_;
};

template <class T>
using TypedProducer = std::function<void(const ProducerContext&, TypedDone<T>)>;
template <class T>
using TypedCallback = std::function<void(const TypedResult<T>&)>;

// Group::Do for a T. Name T explicitly: Do<User>(group, key, ...).
template <class T>
[[nodiscard]] Call Do(Group& group, std::string_view key, TypedProducer<T> producer,
                      TypedCallback<T> callback, CallOptions call_options = {});

// ---------------------------------------------------------------------------
// Implementation.

namespace typed_internal {

// Appends msgpack output to a string, so the leader's bytes are built once.
struct StringWriter {
  std::string* out;
  // NOLINTNEXTLINE(readability-make-member-function-const): msgpack wants non-const
  void write(const char* data, size_t size) { out->append(data, size); }
};

// msgpack limits for untrusted bytes: no element count or blob can be larger
// than the input, so the parser allocates at most a small multiple of it.
// The depth bound keeps recursion far from the stack's end.
inline constexpr size_t kMaxDepth = 64;

inline msgpack::unpack_limit LimitsFor(size_t size) {
  return msgpack::unpack_limit(size, size, size, size, size, kMaxDepth);
}

// Decodes bytes into a new T, or returns a non-ok Status. Never throws.
template <class T>
Status Decode(std::string_view bytes, std::shared_ptr<const T>* out) noexcept {
  try {
    size_t offset = 0;
    msgpack::object_handle handle = msgpack::unpack(bytes.data(), bytes.size(), offset, nullptr,
                                                    nullptr, LimitsFor(bytes.size()));
    if (offset != bytes.size()) {
      return Status(Code::kInvalidArgument, "typed: " + std::to_string(bytes.size() - offset) +
                                                " trailing bytes after the msgpack value");
    }
    *out = std::make_shared<const T>(handle.get().as<T>());
    return Status::Ok();
  } catch (const std::exception& e) {
    // unpack_error (malformed, over a limit), type_error (a bad_cast: the
    // bytes are not a T), bad_alloc, or whatever T's adaptor throws.
    return Status(
        Code::kInvalidArgument,
        std::string("typed: the value cannot be read as the requested type: ") + e.what());
  } catch (...) {
    return Status(Code::kInvalidArgument, "typed: the value's adaptor threw a non-std exception");
  }
}

// The last value decoded for T on this thread, with the bytes it came from.
// Every caller of a flight is handed the same byte buffer (and all of them in
// one loop turn), so this one entry is enough to decode once per flight. The
// weak_ptr pins the buffer's control block, so a new buffer can never be
// mistaken for the old one even if it reuses its address.
template <class T>
struct LastDecoded {
  std::weak_ptr<const std::string> bytes;
  std::shared_ptr<const T> value;

  bool Holds(const std::shared_ptr<const std::string>& candidate) const {
    return value != nullptr && !bytes.expired() && !bytes.owner_before(candidate) &&
           !candidate.owner_before(bytes);
  }
};

template <class T>
LastDecoded<T>& LastDecodedOnThisThread() {
  thread_local LastDecoded<T> last;
  return last;
}

template <class T>
Status DecodeShared(const std::shared_ptr<const std::string>& bytes,
                    std::shared_ptr<const T>* out) noexcept {
  LastDecoded<T>& last = LastDecodedOnThisThread<T>();
  if (last.Holds(bytes)) {
    *out = last.value;
    return Status::Ok();
  }
  Status status = Decode<T>(*bytes, out);
  if (status.ok()) {
    last.bytes = bytes;
    last.value = *out;
  }
  return status;
}

template <class T>
TypedResult<T> ToTyped(const Result& result) noexcept {
  TypedResult<T> typed;
  typed.status = result.status;
  typed.source = result.source;
  typed.shared = result.shared;
  if (!result.ok()) return typed;
  if (!result.value_ptr) {
    typed.status = Status(Code::kInvalidArgument, "typed: an ok result without a value");
    return typed;
  }
  typed.status = DecodeShared<T>(result.value_ptr, &typed.value_ptr);
  return typed;
}

}  // namespace typed_internal

template <class T>
bool TypedDone<T>::operator()(const T& value) const {
  std::string bytes;
  try {
    typed_internal::StringWriter writer{&bytes};
    msgpack::pack(writer, value);
  } catch (const std::exception& e) {
    return done_.Fail(std::string("typed: cannot encode the value: ") + e.what());
  } catch (...) {
    return done_.Fail("typed: the value's adaptor threw a non-std exception");
  }
  return done_(std::move(bytes));
}

template <class T>
Call Do(Group& group, std::string_view key, TypedProducer<T> producer, TypedCallback<T> callback,
        CallOptions call_options) {
  Producer bytes_producer = [producer = std::move(producer)](const ProducerContext& context,
                                                             Done done) {
    producer(context, TypedDone<T>(std::move(done)));
  };
  Callback bytes_callback = [callback = std::move(callback)](const Result& result) {
    callback(typed_internal::ToTyped<T>(result));
  };
  return group.Do(key, std::move(bytes_producer), std::move(bytes_callback), call_options);
}

}  // namespace singleflight
