// gRPC server reflection (grpc.reflection.v1 and v1alpha share one message
// format) answered from the FileDescriptorSet the server was created with, so
// grpcurl and grpc_cli can list, describe and call the mesh's services.
#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/wire_format_lite.h>

#include <deque>
#include <mutex>
#include <set>

#include "shim_server_internal.hpp"

namespace pipemesh {

namespace {

using google::protobuf::FileDescriptor;
using google::protobuf::io::CodedInputStream;
using google::protobuf::io::CodedOutputStream;
using google::protobuf::io::StringOutputStream;
using google::protobuf::internal::WireFormatLite;

const char *const kReflectionMethods[] = {
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
};

// ServerReflectionRequest / ServerReflectionResponse field numbers.
enum RequestField {
  kHost = 1,
  kFileByFilename = 3,
  kFileContainingSymbol = 4,
  kFileContainingExtension = 5,
  kAllExtensionNumbersOfType = 6,
  kListServices = 7,
};
enum ResponseField {
  kValidHost = 1,
  kOriginalRequest = 2,
  kFileDescriptorResponse = 4,
  kListServicesResponse = 6,
  kErrorResponse = 7,
};

struct Request {
  std::string host;
  int kind = 0;
  std::string argument;
};

bool ParseRequest(const std::string &bytes, Request *request) {
  CodedInputStream input(reinterpret_cast<const uint8_t *>(bytes.data()),
                         static_cast<int>(bytes.size()));
  while (uint32_t tag = input.ReadTag()) {
    int field = WireFormatLite::GetTagFieldNumber(tag);
    if (WireFormatLite::GetTagWireType(tag) ==
        WireFormatLite::WIRETYPE_LENGTH_DELIMITED) {
      std::string value;
      if (!WireFormatLite::ReadString(&input, &value)) return false;
      if (field == kHost) {
        request->host = value;
      } else if (field >= kFileByFilename && field <= kListServices) {
        request->kind = field;
        request->argument = value;
      }
    } else if (!WireFormatLite::SkipField(&input, tag)) {
      return false;
    }
  }
  return true;
}

}  // namespace

class ReflectionIndex {
 public:
  google::protobuf::DescriptorPool pool;

  // The file and everything it imports, serialized, dependencies first.
  std::vector<std::string> FileWithDependencies(const FileDescriptor *file) const {
    std::vector<std::string> out;
    std::set<const FileDescriptor *> seen;
    Collect(file, &seen, &out);
    return out;
  }

 private:
  static void Collect(const FileDescriptor *file,
                      std::set<const FileDescriptor *> *seen,
                      std::vector<std::string> *out) {
    if (!seen->insert(file).second) return;
    for (int i = 0; i < file->dependency_count(); ++i) {
      Collect(file->dependency(i), seen, out);
    }
    google::protobuf::FileDescriptorProto proto;
    file->CopyTo(&proto);
    file->CopySourceCodeInfoTo(&proto);
    out->push_back(proto.SerializeAsString());
  }
};

std::shared_ptr<const ReflectionIndex> BuildReflectionIndex(
    const uint8_t *bytes, size_t length, std::string *error) {
  google::protobuf::FileDescriptorSet set;
  if (!set.ParseFromArray(bytes, static_cast<int>(length))) {
    *error = "not a serialized google.protobuf.FileDescriptorSet";
    return nullptr;
  }
  auto index = std::make_shared<ReflectionIndex>();
  for (const auto &file : set.file()) {
    if (index->pool.BuildFile(file) == nullptr) {
      *error = "cannot build " + file.name() + " (imports must come first)";
      return nullptr;
    }
  }
  return index;
}

bool IsReflectionMethod(const std::string &method) {
  for (const char *known : kReflectionMethods) {
    if (method == known) return true;
  }
  return false;
}

namespace {

// Answers each request of the stream in order; one write in flight.
class ReflectionHandler final : public StreamHandler {
 public:
  ReflectionHandler(std::shared_ptr<const ReflectionIndex> index,
                    std::shared_ptr<const std::vector<std::string>> services)
      : index_(std::move(index)), services_(std::move(services)) {}

  void OnStart(ServerStream &stream) override {
    stream_ = &stream;
    stream_->Read(&request_);
  }

  void OnRead(bool ok) override {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!ok) {
      reads_done_ = true;
      MaybeFinishLocked();
      return;
    }
    pending_.push_back(Answer(ReadAll(request_)));
    MaybeWriteLocked();
    // A client that sends without reading answers is not read further
    // until it catches up.
    read_paused_ = pending_.size() >= kMaxPending;
    if (!read_paused_) stream_->Read(&request_);
  }

  void OnWrite(bool ok) override {
    std::lock_guard<std::mutex> lock(mutex_);
    writing_ = false;
    pending_.pop_front();
    if (!ok) {
      pending_.clear();
      reads_done_ = true;
    }
    MaybeWriteLocked();
    MaybeFinishLocked();
    if (read_paused_ && !reads_done_ && pending_.size() < kMaxPending) {
      read_paused_ = false;
      stream_->Read(&request_);
    }
  }

 private:
  static std::string ReadAll(grpc::ByteBuffer &buffer) {
    std::vector<grpc::Slice> slices;
    std::string bytes;
    if (buffer.Dump(&slices).ok()) {
      for (const auto &slice : slices) {
        bytes.append(reinterpret_cast<const char *>(slice.begin()), slice.size());
      }
    }
    return bytes;
  }

  std::string Answer(const std::string &request_bytes) const {
    std::string out;
    {
      StringOutputStream stream(&out);
      CodedOutputStream output(&stream);
      Request request;
      if (!ParseRequest(request_bytes, &request)) {
        WriteError(&output, grpc::StatusCode::INVALID_ARGUMENT,
                   "malformed ServerReflectionRequest");
        return out;
      }
      WireFormatLite::WriteString(kValidHost, request.host, &output);
      WireFormatLite::WriteBytes(kOriginalRequest, request_bytes, &output);
      const FileDescriptor *file = nullptr;
      switch (request.kind) {
        case kListServices: {
          std::string list;
          std::vector<std::string> names = *services_;
          for (const char *method : kReflectionMethods) {
            std::string name(method + 1);
            names.push_back(name.substr(0, name.find('/')));
          }
          for (const auto &service : names) {
            std::string entry;
            {
              StringOutputStream entry_stream(&entry);
              CodedOutputStream entry_output(&entry_stream);
              WireFormatLite::WriteString(1, service, &entry_output);
            }
            std::string wrapped;
            {
              StringOutputStream wrapped_stream(&wrapped);
              CodedOutputStream wrapped_output(&wrapped_stream);
              WireFormatLite::WriteBytes(1, entry, &wrapped_output);
            }
            list += wrapped;
          }
          WireFormatLite::WriteBytes(kListServicesResponse, list, &output);
          return out;
        }
        case kFileByFilename:
          file = index_->pool.FindFileByName(request.argument);
          break;
        case kFileContainingSymbol:
          file = index_->pool.FindFileContainingSymbol(request.argument);
          break;
        default:
          WriteError(&output, grpc::StatusCode::UNIMPLEMENTED,
                     "extensions are not used by this server");
          return out;
      }
      if (file == nullptr) {
        WriteError(&output, grpc::StatusCode::NOT_FOUND,
                   "no file or symbol named " + request.argument);
        return out;
      }
      std::string files;
      {
        StringOutputStream files_stream(&files);
        CodedOutputStream files_output(&files_stream);
        for (const auto &proto : index_->FileWithDependencies(file)) {
          WireFormatLite::WriteBytes(1, proto, &files_output);
        }
      }
      WireFormatLite::WriteBytes(kFileDescriptorResponse, files, &output);
    }
    return out;
  }

  static void WriteError(CodedOutputStream *output, grpc::StatusCode code,
                         const std::string &message) {
    std::string error;
    {
      StringOutputStream stream(&error);
      CodedOutputStream error_output(&stream);
      WireFormatLite::WriteInt32(1, static_cast<int>(code), &error_output);
      WireFormatLite::WriteString(2, message, &error_output);
    }
    WireFormatLite::WriteBytes(kErrorResponse, error, output);
  }

  void MaybeWriteLocked() {
    if (writing_ || pending_.empty()) return;
    writing_ = true;
    grpc::Slice slice(pending_.front());
    response_ = grpc::ByteBuffer(&slice, 1);
    stream_->Write(&response_);
  }

  void MaybeFinishLocked() {
    if (reads_done_ && !writing_ && pending_.empty() && !finished_) {
      finished_ = true;
      stream_->Finish(grpc::Status::OK);
    }
  }

  std::shared_ptr<const ReflectionIndex> index_;
  std::shared_ptr<const std::vector<std::string>> services_;
  ServerStream *stream_ = nullptr;
  grpc::ByteBuffer request_;
  grpc::ByteBuffer response_;
  std::mutex mutex_;
  static constexpr size_t kMaxPending = 8;
  std::deque<std::string> pending_;
  bool read_paused_ = false;
  bool writing_ = false;
  bool reads_done_ = false;
  bool finished_ = false;
};

}  // namespace

std::unique_ptr<StreamHandler> MakeReflectionHandler(
    std::shared_ptr<const ReflectionIndex> index,
    std::shared_ptr<const std::vector<std::string>> services) {
  return std::make_unique<ReflectionHandler>(std::move(index), std::move(services));
}

}  // namespace pipemesh
