// Engine (the whole model) and Predictor (the interactive pair), over the backend interface.
#include <sys/stat.h>

#include "contract.hpp"
#include "internal.hpp"

namespace smat {

using detail::fail;

const char* version() noexcept { return SMAT_VERSION; }

namespace detail {

std::unique_ptr<Backend> open_openvino(const std::string& path, const Options& options);

std::vector<std::string> backend_names() { return {"openvino"}; }

namespace {
std::string built_backends() {
    std::string built;
    for (const auto& name : backend_names()) built += (built.empty() ? "" : ", ") + name;
    return built;
}
}  // namespace

std::unique_ptr<Backend> open_backend(const std::string& path, const Options& options) {
    if (options.backend == "openvino") return open_openvino(path, options);
    fail(Status::Unsupported, "backend '" + options.backend + "' is not built into this library (built: " + built_backends() + ")");
}

namespace {
bool is_file(const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}
bool is_dir(const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}
std::string suffix(const std::string& path) {
    const std::string name = file_name(path);
    const auto dot = name.find_last_of('.');
    std::string s = dot == std::string::npos ? "" : name.substr(dot);
    for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}
std::string short_key(const std::string& key) { return key.substr(0, 12); }

Alpha alpha_from(const Tensor& tensor, std::size_t sample, int width, int height) {
    Alpha alpha;
    alpha.width = width;
    alpha.height = height;
    const std::size_t plane = static_cast<std::size_t>(width) * height;
    if (tensor.data.size() < (sample + 1) * plane) fail(Status::Backend, "the engine returned a smaller alpha than asked");
    alpha.data.assign(tensor.data.begin() + sample * plane, tensor.data.begin() + (sample + 1) * plane);
    return alpha;
}
}  // namespace
}  // namespace detail

// -- Engine ---------------------------------------------------------------------------------------------
struct Engine::Impl {
    ModelInfo info;
    Options options;
    std::unique_ptr<detail::Backend> backend;
};

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Engine::Engine(Engine&&) noexcept = default;
Engine& Engine::operator=(Engine&&) noexcept = default;
Engine::~Engine() = default;

Engine Engine::open(const std::string& path, const Options& options) {
    if (detail::is_dir(path)) {
        fail(Status::InvalidArgument, path + " is a folder: give the whole model's file (smat.onnx), or open the "
                                              "interactive pair in it with smat::Predictor::open");
    }
    if (!detail::is_file(path)) fail(Status::NotFound, "engine not found: " + path);
    if (detail::suffix(path) != ".onnx") {
        fail(Status::Unsupported,
             detail::file_name(path) + ": this library reads .onnx models (backends built: " + detail::built_backends() + ")");
    }
    const auto manifest = detail::read_manifest(path);
    const std::string role = detail::manifest_role(manifest);
    if (manifest.present && role != "whole") {
        if (role == "encoder" || role == "decoder") {
            fail(Status::BadModel, detail::file_name(path) + " is the interactive pair's " + role +
                                       ", not a whole model: open the pair with smat::Predictor::open (or give the "
                                       "whole model, smat.onnx)");
        }
        fail(Status::BadModel, detail::file_name(path) + "'s manifest " + manifest.path + " names no SMat role");
    }
    if (options.upsampling != "guided" && options.upsampling != "bilinear" && options.upsampling != "nearest")
        fail(Status::InvalidArgument, "upsampling must be guided, bilinear or nearest, got '" + options.upsampling + "'");
    auto impl = std::make_unique<Impl>();
    impl->options = options;
    impl->backend = detail::open_model(path, "whole", options, manifest, impl->info);
    return Engine(std::move(impl));
}

const ModelInfo& Engine::info() const { return impl_->info; }

Alpha Engine::matte(const ImageView& image, const Prompts& prompts, State state) const {
    return matte_batch({image}, {prompts}, state).front();
}

std::vector<Alpha> Engine::matte_batch(const std::vector<ImageView>& images, const std::vector<Prompts>& prompts,
                                       State state) const {
    if (!impl_) fail(Status::InvalidArgument, "this engine was moved from");
    if (images.empty()) fail(Status::InvalidArgument, "the batch is empty");
    const auto& info = impl_->info;
    if (static_cast<int>(images.size()) > info.max_batch) {
        fail(Status::InvalidArgument, "a batch of " + std::to_string(images.size()) + " is above the model's limit of " +
                                          std::to_string(info.max_batch));
    }
    if (prompts.size() != 1 && prompts.size() != images.size()) {
        fail(Status::InvalidArgument, "give one prompt list for every photo (" + std::to_string(images.size()) +
                                          ") or one for all, not " + std::to_string(prompts.size()));
    }
    const int width = images.front().width, height = images.front().height;
    const auto& options = impl_->options;
    detail::RunSize run{width, height, false, "full size"};
    const bool sized = width >= info.min_side && height >= info.min_side;
    if (options.size_policy && sized) {
        run = detail::plan_size(height, width, info, options);
    } else if (sized && width <= info.max_width && height <= info.max_height) {
        detail::check_memory("whole", static_cast<int>(images.size()), height, width, options.max_memory_mb);
    }
    std::vector<float> image_data, prompt_data, state_data;
    std::vector<std::vector<float>> full_planes, small_planes;  // a scaled run keeps both sizes of each photo
    for (std::size_t i = 0; i < images.size(); ++i) {
        if (images[i].width != width || images[i].height != height) {
            fail(Status::InvalidArgument, "the photos of a batch must have one size: photo " + std::to_string(i) + " is " +
                                              std::to_string(images[i].width) + "x" + std::to_string(images[i].height) +
                                              ", photo 0 " + std::to_string(width) + "x" + std::to_string(height));
        }
        const Prompts& prompt = prompts.size() == 1 ? prompts[0] : prompts[i];
        if (!run.scaled) {
            detail::append_image(images[i], info, image_data);
            const bool marked = detail::append_prompt(prompt, width, height, prompt_data);
            state_data.push_back(detail::state_value(state, marked, static_cast<int>(i)));
            continue;
        }
        // sizing.Rescale: the photo and its prompt at the run size; the alpha comes back at the photo's size
        std::vector<float> planes, mask;
        ModelInfo full_size = info;
        full_size.max_width = std::max(info.max_width, width);
        full_size.max_height = std::max(info.max_height, height);
        detail::append_image(images[i], full_size, planes);
        const bool marked = detail::append_prompt(prompt, width, height, mask);
        auto small = detail::resize_photo(planes, width, height, run.width, run.height);
        image_data.insert(image_data.end(), small.begin(), small.end());
        const auto small_mask = detail::shrink_prompt(mask, width, height, run.width, run.height);
        prompt_data.insert(prompt_data.end(), small_mask.begin(), small_mask.end());
        state_data.push_back(detail::state_value(state, marked, static_cast<int>(i)));
        full_planes.push_back(std::move(planes));
        small_planes.push_back(std::move(small));
    }
    const std::int64_t batch = static_cast<std::int64_t>(images.size());
    const detail::Feed feed = {
        {"image", {{batch, 3, run.height, run.width}, image_data.data()}},
        {"prompt", {{batch, 1, run.height, run.width}, prompt_data.data()}},
        {"state", {{batch, 1}, state_data.data()}},
    };
    const auto outputs = impl_->backend->infer(feed, {"alpha"});
    const auto& alpha = outputs.at("alpha");
    std::vector<Alpha> result;
    for (std::size_t i = 0; i < images.size(); ++i) {
        Alpha small = detail::alpha_from(alpha, i, run.width, run.height);
        if (run.scaled) {
            small.data = detail::upsample_alpha(options.upsampling, small.data, small_planes[i], run.width, run.height,
                                                full_planes[i], width, height);
            small.width = width;
            small.height = height;
        }
        result.push_back(std::move(small));
    }
    return result;
}

// -- Predictor ------------------------------------------------------------------------------------------
struct Embedding::Data {
    std::string model_key;
    int width = 0, height = 0;
    std::map<std::string, detail::Tensor> tensors;
};

int Embedding::width() const { return data_ ? data_->width : 0; }
int Embedding::height() const { return data_ ? data_->height : 0; }
std::size_t Embedding::bytes() const {
    std::size_t total = 0;
    if (data_)
        for (const auto& [name, tensor] : data_->tensors) total += tensor.data.size() * sizeof(float);
    return total;
}

struct Predictor::Impl {
    ModelInfo encoder_info, decoder_info;
    double max_memory_mb = 0;
    std::unique_ptr<detail::Backend> encoder, decoder;
    std::string model_key;
};

Predictor::Predictor(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Predictor::Predictor(Predictor&&) noexcept = default;
Predictor& Predictor::operator=(Predictor&&) noexcept = default;
Predictor::~Predictor() = default;

namespace {
const std::string kRemake = "export both again with smat-deploy export --interactive";

std::string canonical_precision(const std::string& name) {  // contract.canonical_precision
    for (const auto& [alias, precision] : contract::kPrecisionAliases)
        if (alias == name) return std::string(precision);
    return name;
}

detail::Manifest pair_manifest(const std::string& path) {
    auto manifest = detail::read_manifest(path);
    if (!manifest.present || !manifest.json.is_object()) {
        fail(Status::BadModel, detail::file_name(path) + " has no manifest (" + detail::file_name(manifest.path) +
                                   "): the pair cannot be verified");
    }
    return manifest;
}

void check_role(const std::string& path, const detail::Manifest& manifest, const std::string& role) {
    const std::string found = detail::manifest_role(manifest), name = detail::file_name(path);
    if (found == role) return;
    if (found == "whole") fail(Status::BadModel, name + " is a whole model, not the pair's " + role + ": give the pair's encoder or its folder");
    if (found == "encoder" || found == "decoder")
        fail(Status::BadModel, name + " is the pair's " + found + ", not its " + role + ": give the pair's encoder or its folder");
    fail(Status::BadModel, name + " is not the " + role + " of an interactive pair (its manifest names no pair role)");
}

std::string pair_field(const detail::Manifest& manifest, const char* key) {
    const auto& json = manifest.json;
    if (!json.contains("pair") || !json["pair"].is_object()) return "";
    const auto& pair = json["pair"];
    return pair.contains(key) && pair[key].is_string() ? pair[key].get<std::string>() : "";
}
}  // namespace

Predictor Predictor::open(const std::string& path, const Options& options) {
    std::string encoder;
    if (detail::is_dir(path)) {  // pair.py's _encoder_in
        const std::string precision = canonical_precision(options.precision);
        const contract::Precision* found = nullptr;
        for (const auto& p : contract::kPrecisions)
            if (p.name == precision) found = &p;
        if (!found) fail(Status::InvalidArgument, "unknown precision '" + options.precision + "'");
        encoder = path + "/" + std::string(found->encoder);
        if (!detail::is_file(encoder)) {
            fail(Status::NotFound, path + " has no " + std::string(found->encoder) +
                                       ": make the pair with smat-deploy export --interactive -o " + path);
        }
    } else if (detail::is_file(path)) {
        encoder = path;
    } else {
        fail(Status::NotFound, "no such folder or file: " + path);
    }
    auto encoder_manifest = pair_manifest(encoder);
    check_role(encoder, encoder_manifest, "encoder");
    const auto slash = encoder.find_last_of('/');
    const std::string folder = slash == std::string::npos ? "" : encoder.substr(0, slash + 1);
    const std::string partner = pair_field(encoder_manifest, "partner");
    const std::string decoder = folder + partner;
    if (partner.empty() || !detail::is_file(decoder)) {
        fail(Status::NotFound, detail::file_name(encoder) + "'s decoder " + (partner.empty() ? "None" : partner) + " is not beside it");
    }
    auto decoder_manifest = pair_manifest(decoder);
    check_role(decoder, decoder_manifest, "decoder");
    const std::string named = pair_field(decoder_manifest, "partner");
    if (named != detail::file_name(encoder)) {
        fail(Status::BadModel, detail::file_name(decoder) + " names " + (named.empty() ? "None" : named) + " as its encoder, not " +
                                   detail::file_name(encoder) + ": " + kRemake);
    }
    const std::string key = pair_field(encoder_manifest, "weights_sha256"), other = pair_field(decoder_manifest, "weights_sha256");
    if (key != other || key.empty()) {
        fail(Status::BadModel, detail::file_name(encoder) + " and " + detail::file_name(decoder) +
                                   " were exported from different weights (weights_sha256 " + detail::short_key(key.empty() ? "None" : key) +
                                   " vs " + detail::short_key(other.empty() ? "None" : other) + "): " + kRemake);
    }
    auto precision_of = [](const detail::Manifest& m) {
        return canonical_precision(m.json.contains("precision") && m.json["precision"].is_string() ? m.json["precision"].get<std::string>() : "float32");
    };
    if (precision_of(encoder_manifest) != precision_of(decoder_manifest)) {
        fail(Status::BadModel, detail::file_name(encoder) + " is " + precision_of(encoder_manifest) + " but its decoder " +
                                   detail::file_name(decoder) + " is " + precision_of(decoder_manifest) + ": " + kRemake);
    }
    auto impl = std::make_unique<Impl>();
    impl->max_memory_mb = options.max_memory_mb;
    impl->encoder = detail::open_model(encoder, "encoder", options, encoder_manifest, impl->encoder_info);
    impl->decoder = detail::open_model(decoder, "decoder", options, decoder_manifest, impl->decoder_info);
    impl->model_key = key + ":" + options.backend + ":" + precision_of(encoder_manifest) + ":" + options.inference_precision;
    return Predictor(std::move(impl));
}

const ModelInfo& Predictor::encoder_info() const { return impl_->encoder_info; }
const ModelInfo& Predictor::decoder_info() const { return impl_->decoder_info; }

Embedding Predictor::embed(const ImageView& image) const {
    if (!impl_) fail(Status::InvalidArgument, "this predictor was moved from");
    std::vector<float> image_data;
    const auto& limits = impl_->encoder_info;
    if (image.width >= limits.min_side && image.height >= limits.min_side && image.width <= limits.max_width &&
        image.height <= limits.max_height)
        detail::check_memory("pair", 1, image.height, image.width, impl_->max_memory_mb);
    detail::append_image(image, impl_->encoder_info, image_data);
    const detail::Feed feed = {{"image", {{1, 3, image.height, image.width}, image_data.data()}}};
    const auto names = detail::role_outputs("encoder");
    auto data = std::make_shared<Embedding::Data>();
    data->tensors = impl_->encoder->infer(feed, names);
    data->model_key = impl_->model_key;
    data->width = image.width;
    data->height = image.height;
    Embedding embedding;
    embedding.data_ = std::move(data);
    return embedding;
}

Alpha Predictor::predict(const Embedding& embedding, const Prompts& prompts, State state) const {
    if (!impl_) fail(Status::InvalidArgument, "this predictor was moved from");
    const auto& data = embedding.data_;
    if (!data) fail(Status::InvalidArgument, "predict needs an Embedding from Predictor::embed, got an empty one");
    if (data->model_key != impl_->model_key) {
        fail(Status::InvalidArgument, "this embedding was made by another model or engine (weights " + detail::short_key(data->model_key) +
                                          "), not by this predictor (weights " + detail::short_key(impl_->model_key) +
                                          "): embed the photo again");
    }
    std::vector<float> prompt_data;
    const bool marked = detail::append_prompt(prompts, data->width, data->height, prompt_data);
    const float state_data = detail::state_value(state, marked, 0);
    detail::Feed feed;
    for (const auto& [name, tensor] : data->tensors) feed.push_back({name, {tensor.shape, tensor.data.data()}});
    feed.push_back({"prompt", {{1, 1, data->height, data->width}, prompt_data.data()}});
    feed.push_back({"state", {{1, 1}, &state_data}});
    const auto outputs = impl_->decoder->infer(feed, {"alpha"});
    return detail::alpha_from(outputs.at("alpha"), 0, data->width, data->height);
}

std::vector<std::string> backends() { return detail::backend_names(); }

}  // namespace smat
