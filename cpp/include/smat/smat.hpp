// smat: SMat matting (automatic and interactive) from C++, on the models `smat-deploy export` writes.
//
//   auto engine = smat::Engine::open("export/smat.onnx");             // the whole model + its manifest
//   smat::ImageView photo{pixels, width, height, stride, smat::PixelFormat::BGR8};  // borrowed, not copied
//   smat::Alpha alpha = engine.matte(photo, {smat::Box{40, 30, 600, 470}});          // HxW floats in [0, 1]
//
//   auto pair = smat::Predictor::open("export");                      // smat_encoder.onnx + smat_decoder.onnx
//   smat::Embedding embedding = pair.embed(photo);                    // once per photo
//   smat::Alpha a1 = pair.predict(embedding, {smat::Point{320, 240}}); // once per click
//
// Every failure throws smat::Error (a status code and one line); the C ABI (smat.h) turns it into a
// status code. Engine and Predictor are safe to call from several threads at once. Prompts follow
// smat_deploy/prompts.py exactly: the same pixels for the same points, boxes, scribbles and masks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace smat {

//! The library's version, "MAJOR.MINOR.PATCH".
const char* version() noexcept;

//! What went wrong; the C ABI's status codes have the same values.
enum class Status : int {
    Ok = 0,
    InvalidArgument = 1,  //!< a null pointer, a bad size or stride, an option out of range
    NotFound = 2,         //!< a model, manifest, image or mask file that does not exist
    BadModel = 3,         //!< not an SMat model, a broken or truncated file, a pair that does not belong together
    BadPrompt = 4,        //!< a prompt outside the photo, malformed prompt JSON, an unknown prompt kind
    BadImage = 5,         //!< an unreadable or corrupt PNG/JPEG, an image below the minimum side
    Backend = 6,          //!< the inference runtime failed
    OutOfMemory = 7,      //!< an allocation failed
    Unsupported = 8,      //!< a backend or feature not built into this library
    Internal = 9,         //!< a bug: please report it
};

//! The one exception the library throws: a status and a one-line message.
class Error : public std::runtime_error {
  public:
    Error(Status status, const std::string& message) : std::runtime_error(message), status_(status) {}
    Status status() const noexcept { return status_; }

  private:
    Status status_;
};

enum class PixelFormat : int { RGB8 = 0, BGR8 = 1, RGBA8 = 2, BGRA8 = 3, GRAY8 = 4 };

//! A borrowed view of 8-bit pixels: rows of `width` pixels, `stride` bytes apart (a cv::Mat's step).
struct ImageView {
    const std::uint8_t* data = nullptr;
    int width = 0;
    int height = 0;
    std::size_t stride = 0;  //!< bytes from one row to the next; 0: tightly packed
    PixelFormat format = PixelFormat::RGB8;
};

//! A click: the (2r+1) x (2r+1) square centred on pixel (round(x), round(y)), which must lie in the photo.
struct Point {
    double x = 0, y = 0;
    int radius = 20;
};
//! The filled half-open rectangle x0 <= x < x1, y0 <= y < y1 (coordinates rounded), clipped to the photo.
struct Box {
    double x0 = 0, y0 = 0, x1 = 0, y1 = 0;
};
//! A polyline through the points, drawn `width` pixels wide, clipped to the photo.
struct Scribble {
    std::vector<std::pair<double, double>> points;
    int width = 5;
};
//! A mask the photo's size: non-zero pixels are marked. Either `pixels` (row-major, `width` x `height`)
//! or `path` (a PNG or JPEG file, read as smat-deploy reads mask files).
struct MaskPrompt {
    std::vector<std::uint8_t> pixels;
    int width = 0;
    int height = 0;
    std::string path;
};
using Prompt = std::variant<Point, Box, Scribble, MaskPrompt>;
using Prompts = std::vector<Prompt>;

//! Automatic or interactive. Derived: interactive when the prompts mark a pixel, else automatic.
enum class State : int { Derived = -1, Automatic = 0, Interactive = 1 };

//! An HxW alpha matte, row-major, values in [0, 1].
struct Alpha {
    int width = 0;
    int height = 0;
    std::vector<float> data;
    float at(int x, int y) const { return data[static_cast<std::size_t>(y) * width + x]; }
};

//! An 8-bit photo owned by the library (what read_image returns), viewable as an ImageView.
struct Image {
    int width = 0;
    int height = 0;
    std::vector<std::uint8_t> pixels;  //!< RGB8, tightly packed
    ImageView view() const { return {pixels.data(), width, height, static_cast<std::size_t>(width) * 3, PixelFormat::RGB8}; }
};

struct Options {
    std::string backend = "openvino";              //!< built-in: "openvino" (see backends())
    int threads = 0;                               //!< inference threads; 0: the backend's default
    std::string inference_precision = "f32";       //!< OpenVINO: f32 (default), bf16 or f16
    std::string precision = "float32";             //!< Predictor::open on a folder: which pair (float32, float32_cpu, ...)
    //! Memory budget in MB for one call (the whole model's run, or the pair's embed and clicks): a photo whose
    //! predicted peak does not fit is refused (Status::OutOfMemory) before anything runs. 0: 60% of the
    //! memory available plus what the process holds (smat-deploy's default); below 0: no check.
    double max_memory_mb = 0;
    //! The size policy of smat-deploy (smat_deploy/runtime/sizing.py), for Engine: off (false, the default), a
    //! photo runs at its own size or is refused as above; on, a photo whose predicted peak does not fit the budget
    //! (or whose long side is above max_side) runs scaled down, never above scale_to on its long side, and its
    //! alpha comes back at the photo's size by `upsampling` (guided from the full-size photo, bilinear or nearest).
    bool size_policy = false;
    int scale_to = 0;                 //!< long side of a photo scaled to fit the budget, at most; 0: smat-deploy's (1568)
    int max_side = 0;                 //!< long side every photo is scaled to, at most; 0: only the budget scales
    std::string upsampling = "guided";  //!< guided (default), bilinear or nearest
};

//! The predicted peak memory, in MB, of one OpenVINO call on `batch` photos of `width` x `height`: role
//! "whole" (the whole model), "encoder", "decoder", or "pair" (an embed, or a click with the embedding held).
//! The memory model of smat_deploy/runtime/memory.py, with its calibrated OpenVINO coefficients.
double estimate_memory_mb(const std::string& role, int batch, int height, int width);

//! Backends compiled into this library ("openvino" always; others where CMake found their SDK).
std::vector<std::string> backends();

//! What an opened model is.
struct ModelInfo {
    std::string path;
    std::string role;       //!< whole, encoder or decoder
    std::string precision;  //!< from the manifest; "float32" without one
    std::string weights_sha256;
    std::string backend;
    int min_side = 0, max_height = 0, max_width = 0, max_batch = 0;
};

class Backend;  // the inference runtime behind a model (src/backend.hpp)

//! The whole model (smat.onnx and its manifest smat.json): image, prompt, state -> alpha.
class Engine {
  public:
    static Engine open(const std::string& path, const Options& options = {});
    Alpha matte(const ImageView& image, const Prompts& prompts = {}, State state = State::Derived) const;
    //! Several photos of one size in one engine call; `prompts` holds one list per photo, or one for all.
    std::vector<Alpha> matte_batch(const std::vector<ImageView>& images, const std::vector<Prompts>& prompts,
                                   State state = State::Derived) const;
    const ModelInfo& info() const;

    Engine(Engine&&) noexcept;
    Engine& operator=(Engine&&) noexcept;
    ~Engine();

  private:
    struct Impl;
    explicit Engine(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

//! A photo embedded once by a Predictor; immutable, shareable between threads.
class Embedding {
  public:
    int width() const;
    int height() const;
    std::size_t bytes() const;

  private:
    friend class Predictor;
    struct Data;
    std::shared_ptr<const Data> data_;
};

//! The interactive pair (smat_encoder.onnx + smat_decoder.onnx, checked to belong together as
//! smat-deploy's Predictor.open checks them): embed a photo once, answer every prompt from it.
class Predictor {
  public:
    //! `path`: an export folder holding the pair (options.precision's files) or the encoder file.
    static Predictor open(const std::string& path, const Options& options = {});
    Embedding embed(const ImageView& image) const;
    Alpha predict(const Embedding& embedding, const Prompts& prompts = {}, State state = State::Derived) const;
    const ModelInfo& encoder_info() const;
    const ModelInfo& decoder_info() const;

    Predictor(Predictor&&) noexcept;
    Predictor& operator=(Predictor&&) noexcept;
    ~Predictor();

  private:
    struct Impl;
    explicit Predictor(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

// -- prompts ------------------------------------------------------------------------------------------
//! The union of `prompts` as an HxW mask of 0/1, exactly as smat_deploy.prompts.rasterize draws it.
std::vector<std::uint8_t> rasterize(const Prompts& prompts, int width, int height);
//! A JSON prompt file's text (a list of {"type": "point" | "box" | "scribble" | "mask", ...} objects, or one
//! object), checked as smat-deploy checks it; mask paths are relative to `base_dir`.
Prompts parse_prompts(const std::string& json_text, const std::string& base_dir = ".");
//! A JSON prompt file read and parsed (mask paths relative to the file's folder).
Prompts load_prompt_file(const std::string& path);
//! A scribble file (what `smat-deploy matte --scribble` reads): a JSON list of [x, y] points drawn `width`
//! pixels wide, or an object {"points": [...], "width": W}.
Scribble load_scribble_file(const std::string& path, int width = 5);

// -- images -------------------------------------------------------------------------------------------
//! A PNG or JPEG file as smat-deploy reads photos: 8-bit RGB, its EXIF orientation applied.
Image read_image(const std::string& path);
//! A mask file as smat-deploy reads masks (the alpha channel when it is not all opaque, else the channels'
//! maximum), 0 where the file is zero and non-zero elsewhere; its EXIF orientation applied.
MaskPrompt read_mask(const std::string& path);
//! Write `alpha` as an 8-bit grayscale PNG (round(255 * alpha)), through a temporary file and a rename.
void write_alpha_png(const std::string& path, const Alpha& alpha);

}  // namespace smat
