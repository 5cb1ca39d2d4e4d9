// JobRegistry: jobs and event handlers by name.

#include <algorithm>
#include <map>
#include <mutex>
#include <shared_mutex>

#include <fmt/format.h>

#include <retools/worker.hpp>

namespace retools {

namespace {

// std::less<> lets lookups by string_view avoid building a std::string.
template <class Fn>
using Table = std::map<std::string, std::shared_ptr<const Fn>, std::less<>>;

template <class Fn>
void put(Table<Fn>& table, std::string name, Fn fn, std::string_view what) {
    if (name.empty())
        throw ConfigurationError(fmt::format("retools: cannot register a {} with an empty name", what));
    if (!fn) throw ConfigurationError(fmt::format("retools: {} '{}' has no function", what, name));
    table.insert_or_assign(std::move(name), std::make_shared<const Fn>(std::move(fn)));
}

template <class Fn>
std::shared_ptr<const Fn> get(const Table<Fn>& table, std::string_view name) {
    auto it = table.find(name);
    return it == table.end() ? nullptr : it->second;
}

}  // namespace

struct JobRegistry::Impl {
    mutable std::shared_mutex mutex;
    Table<JobFunction> jobs;
    Table<PrerunHandler> prerun;
    Table<PostrunHandler> postrun;
    Table<FailureHandler> failure;
    Table<WrapperHandler> wrapper;
};

JobRegistry::JobRegistry() : impl_(std::make_unique<Impl>()) {}
JobRegistry::~JobRegistry() = default;

JobRegistry& JobRegistry::global() {
    // Leaked on purpose: job libraries may register from static initializers
    // and the worker may look up during static destruction.
    static JobRegistry* registry = new JobRegistry;
    return *registry;
}

void JobRegistry::register_job(std::string name, JobFunction fn) {
    std::unique_lock lock(impl_->mutex);
    put(impl_->jobs, std::move(name), std::move(fn), "job");
}
void JobRegistry::register_prerun(std::string name, PrerunHandler fn) {
    std::unique_lock lock(impl_->mutex);
    put(impl_->prerun, std::move(name), std::move(fn), "job_prerun handler");
}
void JobRegistry::register_postrun(std::string name, PostrunHandler fn) {
    std::unique_lock lock(impl_->mutex);
    put(impl_->postrun, std::move(name), std::move(fn), "job_postrun handler");
}
void JobRegistry::register_failure(std::string name, FailureHandler fn) {
    std::unique_lock lock(impl_->mutex);
    put(impl_->failure, std::move(name), std::move(fn), "job_failure handler");
}
void JobRegistry::register_wrapper(std::string name, WrapperHandler fn) {
    std::unique_lock lock(impl_->mutex);
    put(impl_->wrapper, std::move(name), std::move(fn), "job_wrapper handler");
}

std::shared_ptr<const JobFunction> JobRegistry::find_job(std::string_view name) const {
    std::shared_lock lock(impl_->mutex);
    return get(impl_->jobs, name);
}
std::shared_ptr<const PrerunHandler> JobRegistry::find_prerun(std::string_view name) const {
    std::shared_lock lock(impl_->mutex);
    return get(impl_->prerun, name);
}
std::shared_ptr<const PostrunHandler> JobRegistry::find_postrun(std::string_view name) const {
    std::shared_lock lock(impl_->mutex);
    return get(impl_->postrun, name);
}
std::shared_ptr<const FailureHandler> JobRegistry::find_failure(std::string_view name) const {
    std::shared_lock lock(impl_->mutex);
    return get(impl_->failure, name);
}
std::shared_ptr<const WrapperHandler> JobRegistry::find_wrapper(std::string_view name) const {
    std::shared_lock lock(impl_->mutex);
    return get(impl_->wrapper, name);
}

std::vector<std::string> JobRegistry::job_names() const {
    std::shared_lock lock(impl_->mutex);
    std::vector<std::string> names;
    names.reserve(impl_->jobs.size());
    for (const auto& [name, fn] : impl_->jobs) names.push_back(name);
    return names;
}

}  // namespace retools
