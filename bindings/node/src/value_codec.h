// How a JS value travels as the library's value bytes.
//
// Default ("typed") mode: a string is stored as one msgpack str, a Buffer as
// one msgpack bin, so a Node follower gets back the type the leader returned,
// and a C++ process reading the same key with singleflight/typed.h's
// Do<std::string> sees the same string. Raw mode: the bytes themselves (a
// string as its UTF-8), always read back as a Buffer, for interop with
// processes that use the bytes API (Group::Do).
#pragma once

#include <string>
#include <string_view>

namespace singleflight::node {

enum class ValueKind { kString, kBytes };

// One msgpack str (kString) or bin (kBytes) holding `payload`.
std::string EncodeTyped(ValueKind kind, std::string_view payload);

// Reads bytes written by EncodeTyped: exactly one str or bin and nothing
// after it. False for anything else (the bytes came from a raw writer, or
// another format); *kind and *payload are then untouched.
bool DecodeTyped(std::string_view bytes, ValueKind* kind, std::string_view* payload);

}  // namespace singleflight::node
