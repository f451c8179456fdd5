// The C ABI (include/smat/smat.h) over the C++ library: every exception becomes a status code and a message.
#include <mutex>
#include <new>

#include "internal.hpp"
#include "smat/smat.h"

struct smat_engine {
    smat::Engine engine;
    mutable std::mutex mutex;
    std::string last_error;
};
struct smat_predictor {
    smat::Predictor predictor;
    mutable std::mutex mutex;
    std::string last_error;
};
struct smat_embedding {
    smat::Embedding embedding;
};

namespace {

thread_local std::string t_last_error;

template <typename Handle>
void remember(Handle* handle, const std::string& message) {
    t_last_error = message;
    if (handle) {
        std::lock_guard<std::mutex> lock(handle->mutex);
        handle->last_error = message;
    }
}

template <typename Handle, typename Body>
smat_status guarded(Handle* handle, Body&& body) noexcept {
    try {
        t_last_error.clear();
        body();
        return SMAT_OK;
    } catch (const smat::Error& err) {
        try { remember(handle, err.what()); } catch (...) {}
        return static_cast<smat_status>(err.status());
    } catch (const std::bad_alloc&) {
        try { remember(handle, "out of memory"); } catch (...) {}
        return SMAT_OUT_OF_MEMORY;
    } catch (const std::exception& err) {
        try { remember(handle, std::string("internal error: ") + err.what()); } catch (...) {}
        return SMAT_INTERNAL;
    } catch (...) {
        try { remember(handle, "internal error: an unknown exception"); } catch (...) {}
        return SMAT_INTERNAL;
    }
}

void require(const void* pointer, const char* what) {
    if (!pointer) smat::detail::fail(smat::Status::InvalidArgument, std::string(what) + " is a null pointer");
}

smat::Options options_from(const smat_options* options) {
    smat::Options out;
    if (!options) return out;
    if (options->backend) out.backend = options->backend;
    out.threads = options->threads;
    if (options->inference_precision) out.inference_precision = options->inference_precision;
    if (options->precision) out.precision = options->precision;
    out.max_memory_mb = options->max_memory_mb;
    out.size_policy = options->size_policy != 0;
    out.scale_to = options->scale_to;
    out.max_side = options->max_side;
    if (options->upsampling) out.upsampling = options->upsampling;
    return out;
}

smat::ImageView view_of(const smat_image* image) {
    require(image, "image");
    if (image->format < SMAT_RGB8 || image->format > SMAT_GRAY8)
        smat::detail::fail(smat::Status::InvalidArgument, "unknown pixel format " + std::to_string(image->format));
    return {image->data, image->width, image->height, image->stride, static_cast<smat::PixelFormat>(image->format)};
}

smat::Prompts prompts_of(const char* json, const char* base_dir) {
    if (!json || !*json) return {};
    return smat::parse_prompts(json, base_dir ? base_dir : ".");
}

smat::State state_of(int32_t state) {
    if (state < -1 || state > 1)
        smat::detail::fail(smat::Status::InvalidArgument,
                           "state must be -1 (derived), 0 (automatic) or 1 (interactive), got " + std::to_string(state));
    return static_cast<smat::State>(state);
}

void copy_alpha(const smat::Alpha& result, float* alpha, size_t capacity) {
    const size_t needed = result.data.size();
    if (capacity < needed) {
        smat::detail::fail(smat::Status::InvalidArgument, "the alpha buffer holds " + std::to_string(capacity) +
                                                              " floats; this photo needs " + std::to_string(needed));
    }
    std::copy(result.data.begin(), result.data.end(), alpha);
}

void check_capacity(const smat_image* image, float* alpha, size_t capacity) {
    require(alpha, "alpha");
    if (image && image->width > 0 && image->height > 0 &&
        capacity < static_cast<size_t>(image->width) * static_cast<size_t>(image->height)) {
        smat::detail::fail(smat::Status::InvalidArgument,
                           "the alpha buffer holds " + std::to_string(capacity) + " floats; this photo needs " +
                               std::to_string(static_cast<size_t>(image->width) * static_cast<size_t>(image->height)));
    }
}

}  // namespace

extern "C" {

const char* smat_version(void) { return smat::version(); }
const char* smat_last_error(void) { return t_last_error.c_str(); }

smat_status smat_engine_open(const char* model_path, const smat_options* options, smat_engine** engine) {
    return guarded<smat_engine>(nullptr, [&] {
        require(engine, "engine");
        *engine = nullptr;
        require(model_path, "model_path");
        *engine = new smat_engine{smat::Engine::open(model_path, options_from(options)), {}, {}};
    });
}

smat_status smat_engine_matte(smat_engine* engine, const smat_image* image, const char* prompts_json, const char* base_dir,
                              int32_t state, float* alpha, size_t alpha_capacity) {
    return guarded(engine, [&] {
        require(engine, "engine");
        check_capacity(image, alpha, alpha_capacity);
        const auto result = engine->engine.matte(view_of(image), prompts_of(prompts_json, base_dir), state_of(state));
        copy_alpha(result, alpha, alpha_capacity);
    });
}

const char* smat_engine_last_error(const smat_engine* engine) {
    if (!engine) return "engine is a null pointer";
    std::lock_guard<std::mutex> lock(engine->mutex);
    thread_local std::string copy;
    copy = engine->last_error;
    return copy.c_str();
}

void smat_engine_close(smat_engine* engine) { delete engine; }

smat_status smat_predictor_open(const char* path, const smat_options* options, smat_predictor** predictor) {
    return guarded<smat_predictor>(nullptr, [&] {
        require(predictor, "predictor");
        *predictor = nullptr;
        require(path, "path");
        *predictor = new smat_predictor{smat::Predictor::open(path, options_from(options)), {}, {}};
    });
}

smat_status smat_predictor_embed(smat_predictor* predictor, const smat_image* image, smat_embedding** embedding) {
    return guarded(predictor, [&] {
        require(embedding, "embedding");
        *embedding = nullptr;
        require(predictor, "predictor");
        auto made = predictor->predictor.embed(view_of(image));
        *embedding = new smat_embedding{std::move(made)};
    });
}

smat_status smat_predictor_predict(smat_predictor* predictor, const smat_embedding* embedding, const char* prompts_json,
                                   const char* base_dir, int32_t state, float* alpha, size_t alpha_capacity) {
    return guarded(predictor, [&] {
        require(predictor, "predictor");
        require(embedding, "embedding");
        require(alpha, "alpha");
        const auto result = predictor->predictor.predict(embedding->embedding, prompts_of(prompts_json, base_dir), state_of(state));
        copy_alpha(result, alpha, alpha_capacity);
    });
}

const char* smat_predictor_last_error(const smat_predictor* predictor) {
    if (!predictor) return "predictor is a null pointer";
    std::lock_guard<std::mutex> lock(predictor->mutex);
    thread_local std::string copy;
    copy = predictor->last_error;
    return copy.c_str();
}

void smat_predictor_close(smat_predictor* predictor) { delete predictor; }

smat_status smat_embedding_size(const smat_embedding* embedding, int32_t* width, int32_t* height) {
    return guarded<smat_engine>(nullptr, [&] {
        require(embedding, "embedding");
        require(width, "width");
        require(height, "height");
        *width = embedding->embedding.width();
        *height = embedding->embedding.height();
    });
}

void smat_embedding_free(smat_embedding* embedding) { delete embedding; }

smat_status smat_read_image(const char* path, int32_t* width, int32_t* height, uint8_t* rgb, size_t rgb_capacity) {
    return guarded<smat_engine>(nullptr, [&] {
        require(path, "path");
        require(width, "width");
        require(height, "height");
        const smat::Image image = smat::read_image(path);
        *width = image.width;
        *height = image.height;
        if (!rgb) return;
        if (rgb_capacity < image.pixels.size())
            smat::detail::fail(smat::Status::InvalidArgument, "the pixel buffer holds " + std::to_string(rgb_capacity) +
                                                                  " bytes; this photo needs " + std::to_string(image.pixels.size()));
        std::copy(image.pixels.begin(), image.pixels.end(), rgb);
    });
}

smat_status smat_estimate_memory_mb(const char* role, int32_t batch, int32_t height, int32_t width, double* mb) {
    return guarded<smat_engine>(nullptr, [&] {
        require(role, "role");
        require(mb, "mb");
        *mb = smat::estimate_memory_mb(role, batch, height, width);
    });
}

smat_status smat_rasterize(const char* prompts_json, const char* base_dir, int32_t width, int32_t height, uint8_t* mask,
                           size_t mask_capacity) {
    return guarded<smat_engine>(nullptr, [&] {
        require(mask, "mask");
        if (width < 1 || height < 1)
            smat::detail::fail(smat::Status::InvalidArgument, "width and height must be positive, got " +
                                                                  std::to_string(width) + "x" + std::to_string(height));
        if (mask_capacity < static_cast<size_t>(width) * static_cast<size_t>(height))
            smat::detail::fail(smat::Status::InvalidArgument, "the mask buffer holds " + std::to_string(mask_capacity) +
                                                                  " bytes; " + std::to_string(width) + "x" +
                                                                  std::to_string(height) + " needs more");
        const auto result = smat::rasterize(prompts_of(prompts_json, base_dir), width, height);
        std::copy(result.begin(), result.end(), mask);
    });
}

smat_status smat_upsample_alpha(const char* method, const float* alpha, int32_t small_width, int32_t small_height,
                                const float* small_rgb, const float* rgb, int32_t width, int32_t height, float* out,
                                size_t out_capacity) {
    return guarded<smat_engine>(nullptr, [&] {
        require(method, "method");
        require(alpha, "alpha");
        require(out, "out");
        const std::string name = method;
        if (small_width < 1 || small_height < 1 || small_width > width || small_height > height)
            smat::detail::fail(smat::Status::InvalidArgument,
                               "upsampling enlarges: " + std::to_string(small_width) + "x" + std::to_string(small_height) +
                                   " to " + std::to_string(width) + "x" + std::to_string(height) + " is not that");
        if (out_capacity < static_cast<size_t>(width) * static_cast<size_t>(height))
            smat::detail::fail(smat::Status::InvalidArgument, "the output buffer holds " + std::to_string(out_capacity) +
                                                                  " floats; " + std::to_string(width) + "x" +
                                                                  std::to_string(height) + " needs more");
        const auto planes = [](const float* interleaved, int w, int h) {  // HxWx3 -> 3 planes
            const std::size_t n = static_cast<std::size_t>(w) * h;
            std::vector<float> result(3 * n);
            for (std::size_t k = 0; k < n; ++k)
                for (int c = 0; c < 3; ++c) result[c * n + k] = interleaved[k * 3 + c];
            return result;
        };
        std::vector<float> small, full;
        if (name == "guided") {
            require(small_rgb, "small_rgb");
            require(rgb, "rgb");
            small = planes(small_rgb, small_width, small_height);
            full = planes(rgb, width, height);
        }
        const std::vector<float> values(alpha, alpha + static_cast<std::size_t>(small_width) * small_height);
        const auto result = smat::detail::upsample_alpha(name, values, small, small_width, small_height, full, width, height);
        std::copy(result.begin(), result.end(), out);
    });
}

}  // extern "C"
