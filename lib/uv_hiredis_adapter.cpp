#include "uv_hiredis_adapter.h"

#include "loop_ref.h"

namespace singleflight::internal {
namespace {

struct UvAdapter {
  uv_poll_t poll;
  redisAsyncContext* ac;  // null once hiredis has started freeing the context
  int events = 0;         // the UV_READABLE/UV_WRITABLE set hiredis asked for
  AdapterClosedFn on_closed;
  void* arg;
};

UvAdapter* FromHook(void* data) {
  return static_cast<UvAdapter*>(data);
}

void Update(UvAdapter* adapter);

void OnPoll(uv_poll_t* handle, int status, int events) noexcept {
  auto* adapter = static_cast<UvAdapter*>(handle->data);
  if (status < 0) {
    // libuv has stopped the handle and reports no events. A read makes hiredis
    // notice the socket error (or finish a failed connect) and tear down.
    if (adapter->ac != nullptr) redisAsyncHandleRead(adapter->ac);
    // If hiredis survived it (the error was transient), poll again: libuv
    // left the handle stopped, and nothing else would restart it.
    if (adapter->ac != nullptr) Update(adapter);
    return;
  }
  // Each handler may free the context, which clears adapter->ac.
  if (adapter->ac != nullptr && (events & UV_READABLE)) redisAsyncHandleRead(adapter->ac);
  if (adapter->ac != nullptr && (events & UV_WRITABLE)) redisAsyncHandleWrite(adapter->ac);
}

void Update(UvAdapter* adapter) {
  if (adapter->events != 0) {
    uv_poll_start(&adapter->poll, adapter->events, OnPoll);
  } else {
    uv_poll_stop(&adapter->poll);
  }
}

void AddRead(void* data) {
  FromHook(data)->events |= UV_READABLE;
  Update(FromHook(data));
}

void DelRead(void* data) {
  FromHook(data)->events &= ~UV_READABLE;
  Update(FromHook(data));
}

void AddWrite(void* data) {
  FromHook(data)->events |= UV_WRITABLE;
  Update(FromHook(data));
}

void DelWrite(void* data) {
  FromHook(data)->events &= ~UV_WRITABLE;
  Update(FromHook(data));
}

void OnClosed(uv_handle_t* handle) noexcept {
  auto* adapter = static_cast<UvAdapter*>(handle->data);
  AdapterClosedFn on_closed = adapter->on_closed;
  void* arg = adapter->arg;
  delete adapter;
  if (on_closed != nullptr) on_closed(arg);
}

// hiredis calls this while freeing the context, before it closes the fd;
// uv_close stops polling at once, so the fd is never polled after close.
void Cleanup(void* data) {
  UvAdapter* adapter = FromHook(data);
  adapter->ac->ev.data = nullptr;
  adapter->ac = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(&adapter->poll), OnClosed);
}

}  // namespace

int AttachUvAdapter(uv_loop_t* loop, redisAsyncContext* ac, AdapterClosedFn on_closed, void* arg,
                    bool keep_loop_alive) {
  if (ac->ev.data != nullptr) return REDIS_ERR;
  auto* adapter = new UvAdapter{};
  if (uv_poll_init(loop, &adapter->poll, ac->c.fd) != 0) {
    delete adapter;  // a failed init leaves no handle to close
    return REDIS_ERR;
  }
  KeepsLoopAlive(&adapter->poll, keep_loop_alive);
  adapter->poll.data = adapter;
  adapter->ac = ac;
  adapter->on_closed = on_closed;
  adapter->arg = arg;
  ac->ev.data = adapter;
  ac->ev.addRead = AddRead;
  ac->ev.delRead = DelRead;
  ac->ev.addWrite = AddWrite;
  ac->ev.delWrite = DelWrite;
  ac->ev.cleanup = Cleanup;
  return REDIS_OK;
}

}  // namespace singleflight::internal
