#pragma once
// A sized input range of f(i) for i in [begin, end): what
// `views::iota(begin, end) | views::transform(f)` gives, written out because
// clang 14 (the fuzz build) cannot compile libstdc++ 12's iota_view.

#include <cstddef>
#include <string_view>

namespace retools::detail {

template <class F>
class IndexedRange {
public:
    IndexedRange(std::size_t begin, std::size_t end, F& f) : begin_(begin), end_(end), f_(&f) {}

    class iterator {
    public:
        using value_type = std::string_view;
        using difference_type = std::ptrdiff_t;
        iterator() = default;
        iterator(F* f, std::size_t i) : f_(f), i_(i) {}
        std::string_view operator*() const { return (*f_)(i_); }
        iterator& operator++() {
            ++i_;
            return *this;
        }
        void operator++(int) { ++i_; }
        bool operator==(const iterator& other) const { return i_ == other.i_; }

    private:
        F* f_ = nullptr;
        std::size_t i_ = 0;
    };

    iterator begin() const { return {f_, begin_}; }
    iterator end() const { return {f_, end_}; }
    std::size_t size() const { return end_ - begin_; }

private:
    std::size_t begin_, end_;
    F* f_;
};

}  // namespace retools::detail
