// Internal pieces shared by the library's sources (not installed).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "smat/smat.hpp"

namespace smat::detail {

[[noreturn]] void fail(Status status, const std::string& message);

//! A float32 tensor the library owns.
struct Tensor {
    std::vector<std::int64_t> shape;
    std::vector<float> data;
};

//! A float32 tensor the caller owns for the duration of one call (no copy).
struct TensorRef {
    std::vector<std::int64_t> shape;
    const float* data = nullptr;
};

using Feed = std::vector<std::pair<std::string, TensorRef>>;

//! One inference runtime behind one model file (mirrors smat_deploy/runtime/base.py's Backend): it reports
//! the file's inputs and outputs, and runs it. Implementations must allow concurrent infer() calls.
class Backend {
  public:
    virtual ~Backend() = default;
    virtual std::string name() const = 0;
    virtual std::vector<std::string> input_names() const = 0;
    virtual std::vector<std::string> output_names() const = 0;
    //! Inputs or outputs whose element type is not float32 (the contract's only type).
    virtual std::vector<std::string> non_float_ports() const = 0;
    virtual std::map<std::string, Tensor> infer(const Feed& feed, const std::vector<std::string>& outputs) const = 0;
};

//! The backends compiled in, by name; open one on `path`.
std::unique_ptr<Backend> open_backend(const std::string& path, const Options& options);
std::vector<std::string> backend_names();

// -- the contract and manifests (src/model.cpp) ----------------------------------------------------
struct Manifest {
    bool present = false;
    nlohmann::json json;
    std::string path;
};

std::string sidecar_path(const std::string& model_path);
Manifest read_manifest(const std::string& model_path);
//! manifest_role in smat_deploy/contract.py: the "role" key, else the pair section's role, else "whole".
std::string manifest_role(const Manifest& manifest);
std::vector<std::string> role_inputs(const std::string& role);
std::vector<std::string> role_outputs(const std::string& role);
//! Open `path` on the backend for `role`, check its I/O against the role's, and describe it.
std::unique_ptr<Backend> open_model(const std::string& path, const std::string& role, const Options& options,
                                    const Manifest& manifest, ModelInfo& info);
std::string file_name(const std::string& path);

// -- inputs (src/inputs.cpp) -------------------------------------------------------------------------
//! Check `image` against the model's limits and append it, as float32 RGB planes in [0, 1], to `out`.
void append_image(const ImageView& image, const ModelInfo& limits, std::vector<float>& out);
//! The prompt mask as 0/1 floats appended to `out`; returns whether it marks a pixel.
bool append_prompt(const Prompts& prompts, int width, int height, std::vector<float>& out);
//! The state value for one sample (prepare_state in smat_deploy/runtime/inputs.py).
float state_value(State state, bool marked, int sample);

// -- memory (src/memory.cpp) -------------------------------------------------------------------------
//! Refuse a call whose predicted peak (the memory model, `role`: whole or pair) exceeds the budget:
//! `max_memory_mb` > 0, or 0 for 60% of the available memory plus the resident; < 0 turns the check off.
void check_memory(const std::string& role, int batch, int height, int width, double max_memory_mb);

//! The size `width` x `height` photos run at under the size policy (Sizing.plan in smat_deploy/runtime/sizing.py,
//! planned per photo as there, on OpenVINO's memory model): full size when one fits, else scaled.
struct RunSize {
    int width = 0, height = 0;
    bool scaled = false;
    std::string reason;
};
RunSize plan_size(int height, int width, const ModelInfo& limits, const Options& options);

// -- scaling and upsampling (src/resample.cpp) ------------------------------------------------------
enum class PillowFilter { Bilinear, Box };
//! A float plane resized as Pillow's Image.resize resizes an "F" image (box: the source region, in float).
std::vector<float> pillow_resize(const float* source, int width, int height, int out_width, int out_height,
                                 PillowFilter filter, const float* box = nullptr);
std::vector<float> resize_nearest(const float* source, int width, int height, int out_width, int out_height);
std::vector<float> resize_bilinear(const float* source, int width, int height, int out_width, int out_height);
//! 3 RGB planes in [0, 1] scaled as smat_deploy.images.resize_image scales a photo.
std::vector<float> resize_photo(const std::vector<float>& planes, int width, int height, int out_width, int out_height);
//! sizing.shrink_prompt: nearest, and a mask that loses every marked pixel that way keeps each cell it touches.
std::vector<float> shrink_prompt(const std::vector<float>& mask, int width, int height, int out_width, int out_height);
//! upsample.upsample_alpha: the alpha at the small size back at the full size (guided: from the photo's planes).
std::vector<float> upsample_alpha(const std::string& method, const std::vector<float>& alpha, const std::vector<float>& small,
                                  int width, int height, const std::vector<float>& full, int full_width, int full_height);

// -- images (src/images.cpp) -------------------------------------------------------------------------
struct Decoded {
    int width = 0, height = 0, channels = 0;  // channels: 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA
    bool sixteen = false;                     // samples are 16-bit (in `wide`), else 8-bit (in `narrow`)
    std::vector<std::uint8_t> narrow;
    std::vector<std::uint16_t> wide;
};
Decoded decode_file(const std::string& path, bool as_mask);

}  // namespace smat::detail
