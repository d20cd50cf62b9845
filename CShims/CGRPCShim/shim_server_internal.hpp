// The server's internals: a call's stream and the handlers it drives.
//
// Calls are driven by grpc++'s completion-queue API: each server runs one
// thread of its own polling one completion queue, so a request is read,
// routed and (for small inline answers) answered on the thread that took it
// off the socket, with no hand-off to another thread on the way.
#ifndef PIPEMESH_SHIM_SERVER_INTERNAL_HPP
#define PIPEMESH_SHIM_SERVER_INTERNAL_HPP

#include <grpcpp/alarm.h>
#include <grpcpp/generic/async_generic_service.h>

#include <atomic>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <string>
#include <vector>

#include "shim_internal.hpp"

namespace pipemesh {

// Whether operations may still be started on a server's calls: not once its
// completion queues are shut down, which grpc++ treats as a fatal error.
class ServerGate {
 public:
  // Runs `start` unless the gate is closed; returns whether it ran.
  template <typename Start>
  bool Run(Start &&start) {
    std::shared_lock<std::shared_mutex> lock(mutex_);
    if (closed_) return false;
    start();
    return true;
  }

  // Waits for operations being started, then refuses new ones.
  void Close() {
    std::unique_lock<std::shared_mutex> lock(mutex_);
    closed_ = true;
  }

 private:
  std::shared_mutex mutex_;
  bool closed_ = false;
};

class ServerStream;

// What an accepted call does; the stream calls it from its completion-queue
// thread as each operation completes.
class StreamHandler {
 public:
  virtual ~StreamHandler() = default;
  // The call arrived; its method and metadata are readable now.
  virtual void OnStart(ServerStream &stream) = 0;
  virtual void OnRead(bool ok) {}
  virtual void OnWrite(bool ok) {}
  // An alarm set with SetAlarm went off (`fired`), or was cancelled.
  virtual void OnAlarm(bool fired) {}
  // The call is over: finished, or cancelled (by the client, a deadline or
  // the server's shutdown) when `cancelled`.
  virtual void OnDone(bool cancelled) {}
};

// One call of the generic service: its context and stream, the tags its
// operations complete with, and a reference count (one per pending operation,
// one for the done notification, and one per holder such as a C handler).
// Deletes itself, and its handler, when the last reference goes.
class ServerStream {
 public:
  enum class Operation { kAccept, kRead, kWrite, kFinish, kDone, kAlarm };

  // The tag a completion queue returns for one of a stream's operations.
  struct Tag {
    ServerStream *stream;
    Operation operation;
  };

  // Called on a completion-queue thread when a stream was accepted (`ok`) or
  // will never be (the server is shutting down).
  using AcceptHandler = void (*)(void *context, ServerStream *stream,
                                 grpc::ServerCompletionQueue *queue, bool ok);

  explicit ServerStream(std::shared_ptr<ServerGate> gate);

  // Asks `service` for the next call on `queue`.
  void Accept(grpc::AsyncGenericService *service, grpc::ServerCompletionQueue *queue,
              AcceptHandler accepted, void *context);

  // Runs `handler` for the accepted call from now on (takes ownership).
  void Start(std::unique_ptr<StreamHandler> handler);

  // Dispatches one completion to the handler, then drops its reference.
  void Complete(Operation operation, bool ok);

  // Each starts one operation and returns true, or returns false when the
  // server no longer accepts operations (nothing was started).
  bool Read(grpc::ByteBuffer *message);
  bool Write(const grpc::ByteBuffer *message);
  bool WriteAndFinish(const grpc::ByteBuffer *message);
  bool Finish(const grpc::Status &status);
  // Calls the handler's OnAlarm at `deadline` (at most one alarm per call),
  // or sooner with `fired` false once CancelAlarm is called.
  bool SetAlarm(std::chrono::system_clock::time_point deadline);
  void CancelAlarm() {
    if (alarm_) alarm_->Cancel();
  }

  void Reference() { references_.fetch_add(1, std::memory_order_relaxed); }
  void Unreference();

  grpc::GenericServerContext context;

 private:
  grpc::GenericServerAsyncReaderWriter stream_{&context};
  std::shared_ptr<ServerGate> gate_;
  std::unique_ptr<StreamHandler> handler_;
  std::atomic<int> references_{0};
  AcceptHandler accepted_ = nullptr;
  void *accepted_context_ = nullptr;
  grpc::ServerCompletionQueue *queue_ = nullptr;
  Tag accept_tag_{this, Operation::kAccept};
  Tag read_tag_{this, Operation::kRead};
  Tag write_tag_{this, Operation::kWrite};
  Tag finish_tag_{this, Operation::kFinish};
  Tag done_tag_{this, Operation::kDone};
  std::optional<grpc::Alarm> alarm_;  // made by SetAlarm: most calls need none
  Tag alarm_tag_{this, Operation::kAlarm};
};

}  // namespace pipemesh

#endif
