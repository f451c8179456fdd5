// The OpenVINO backend (smat_deploy/runtime/openvino.py): an exported .onnx read directly by OpenVINO's
// C++ runtime, compiled for the CPU in float32 unless asked otherwise (OpenVINO's own default on CPUs with
// AMX or AVX-512 BF16 would be bfloat16), with the LATENCY hint. The compiled model is shared; each call
// borrows an infer request from a pool (requests are not thread-safe). Inputs are copied into tensors
// OpenVINO allocates, as its Python API does: handing it the library's own buffers measured 2-3% slower.
#include <cstring>
#include <mutex>

#include <openvino/frontend/manager.hpp>
#include <openvino/openvino.hpp>

#include "internal.hpp"

namespace smat::detail {
namespace {

// OpenVINO's messages start with "Exception from <source file>:<line>:" lines: the first other line says it.
std::string first_line(const std::string& text) {
    std::size_t start = 0;
    while (start < text.size()) {
        std::size_t end = text.find('\n', start);
        if (end == std::string::npos) end = text.size();
        std::string line = text.substr(start, end - start);
        while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
        while (!line.empty() && line.front() == ' ') line.erase(line.begin());
        if (!line.empty() && line.rfind("Exception from ", 0) != 0) return line;
        start = end + 1;
    }
    return "unknown error";
}

class OpenVinoBackend final : public Backend {
  public:
    OpenVinoBackend(const std::string& path, const Options& options) {
        if (options.inference_precision != "f32" && options.inference_precision != "bf16" && options.inference_precision != "f16")
            fail(Status::InvalidArgument, "inference_precision '" + options.inference_precision + "': expected one of f32, bf16, f16");
        if (options.threads < 0) fail(Status::InvalidArgument, "threads must be >= 0, got " + std::to_string(options.threads));
        try {
            static ov::Core core;  // one per process: it caches plugins
            // The ONNX frontend, named: Core::read_model would also try its other frontends on a broken file
            // (TensorFlow's logs to stderr), and an .onnx is all this backend reads.
            static ov::frontend::FrontEndManager manager;
            static std::mutex loading;
            std::shared_ptr<ov::Model> model;
            {
                std::lock_guard<std::mutex> lock(loading);
                const auto frontend = manager.load_by_framework("onnx");
                model = frontend->convert(frontend->load(path));
            }
            for (const auto& port : model->inputs()) collect(port, inputs_);
            for (const auto& port : model->outputs()) collect(port, outputs_);
            ov::AnyMap config{ov::hint::inference_precision(ov::element::Type(options.inference_precision)),
                              ov::hint::performance_mode(ov::hint::PerformanceMode::LATENCY)};
            if (options.threads > 0) config.emplace(ov::inference_num_threads(options.threads));
            compiled_ = core.compile_model(model, "CPU", config);
        } catch (const Error&) {
            throw;
        } catch (const std::bad_alloc&) {
            fail(Status::OutOfMemory, "out of memory loading " + path);
        } catch (const std::exception& err) {
            fail(Status::BadModel, "OpenVINO cannot load " + path + ": " + first_line(err.what()));
        }
    }

    std::string name() const override { return "openvino"; }
    std::vector<std::string> input_names() const override { return names(inputs_); }
    std::vector<std::string> output_names() const override { return names(outputs_); }
    std::vector<std::string> non_float_ports() const override {
        std::vector<std::string> bad;
        for (const auto* ports : {&inputs_, &outputs_})
            for (const auto& [name, type] : *ports)
                if (type != ov::element::f32) bad.push_back(name);
        return bad;
    }

    std::map<std::string, Tensor> infer(const Feed& feed, const std::vector<std::string>& outputs) const override {
        std::map<std::string, Tensor> result;
        try {
            Lease lease(*this);
            for (const auto& [name, ref] : feed) {
                ov::Shape shape(ref.shape.begin(), ref.shape.end());
                // copied into a tensor OpenVINO allocates (aligned as its kernels want), as its Python API does
                ov::Tensor tensor(ov::element::f32, shape);
                std::memcpy(tensor.data<float>(), ref.data, tensor.get_byte_size());
                lease.request.set_tensor(name, tensor);
            }
            lease.request.infer();
            for (const auto& name : outputs) {
                const ov::Tensor out = lease.request.get_tensor(name);
                Tensor tensor;
                const ov::Shape shape = out.get_shape();  // by value: one copy for both iterators
                tensor.shape.assign(shape.begin(), shape.end());
                const float* data = out.data<const float>();
                tensor.data.assign(data, data + out.get_size());
                result.emplace(name, std::move(tensor));
            }
        } catch (const std::bad_alloc&) {
            fail(Status::OutOfMemory, "out of memory in OpenVINO's inference");
        } catch (const std::exception& err) {
            fail(Status::Backend, "OpenVINO inference failed: " + first_line(err.what()));
        }
        return result;
    }

  private:
    using Ports = std::vector<std::pair<std::string, ov::element::Type>>;

    static void collect(const ov::Output<ov::Node>& port, Ports& into) {
        into.emplace_back(port.get_any_name(), port.get_element_type());
    }
    static std::vector<std::string> names(const Ports& ports) {
        std::vector<std::string> out;
        for (const auto& p : ports) out.push_back(p.first);
        return out;
    }

    struct Lease {  // an infer request taken from the pool for one call, returned after it
        explicit Lease(const OpenVinoBackend& owner) : owner(owner) {
            std::lock_guard<std::mutex> lock(owner.mutex_);
            if (owner.idle_.empty()) {
                request = owner.compiled_.create_infer_request();
            } else {
                request = std::move(owner.idle_.back());
                owner.idle_.pop_back();
            }
        }
        ~Lease() {
            std::lock_guard<std::mutex> lock(owner.mutex_);
            owner.idle_.push_back(std::move(request));
        }
        const OpenVinoBackend& owner;
        ov::InferRequest request;
    };

    Ports inputs_, outputs_;
    mutable ov::CompiledModel compiled_;
    mutable std::mutex mutex_;
    mutable std::vector<ov::InferRequest> idle_;
};

}  // namespace

std::unique_ptr<Backend> open_openvino(const std::string& path, const Options& options) {
    return std::make_unique<OpenVinoBackend>(path, options);
}

}  // namespace smat::detail
