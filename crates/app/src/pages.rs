//! Pagination: `page` and `page_size` in, `{data, pagination}` out.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use verdict_store::model::MAX_PAGE_SIZE;

/// The largest page number: the document declares pages as 32-bit integers.
const MAX_PAGE: u32 = i32::MAX as u32;
use verdict_store::{Page, PageRequest};

use crate::error::{AppError, ErrorCode};

/// `page` and `page_size`: both or neither; page ≥ 1; 1 ≤ page_size ≤ 100.
#[derive(Debug, Clone, Copy, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Page number, from 1 (default 1; give with `page_size`).
    #[param(minimum = 1)]
    pub page: Option<u32>,
    /// Items per page, 1 to 100 (default 20; give with `page`).
    #[param(minimum = 1, maximum = 100)]
    pub page_size: Option<u32>,
}

impl PageParams {
    pub fn to_request(self) -> Result<PageRequest, AppError> {
        let bad = |msg: &str| Err(AppError::new(ErrorCode::InvalidPagination, msg.to_owned()));
        match (self.page, self.page_size) {
            (None, None) => Ok(PageRequest::DEFAULT),
            (Some(_), None) | (None, Some(_)) => bad("give both page and page_size, or neither"),
            (Some(0), _) => bad("page starts at 1"),
            // The document declares 32-bit integers (OpenAPI `int32`).
            (Some(page), _) if page > MAX_PAGE => bad("page must be at most 2147483647"),
            (_, Some(size)) if size == 0 || size > MAX_PAGE_SIZE => {
                bad("page_size must be between 1 and 100")
            }
            (Some(page), Some(page_size)) => Ok(PageRequest { page, page_size }),
        }
    }
}

/// A page of a list: `{data, pagination}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Paginated<T> {
    pub data: Vec<T>,
    pub pagination: Pagination,
}

/// Where a page sits: `page` and `page_size` as requested (defaults 1 and 20).
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct Pagination {
    pub page: u32,
    pub page_size: u32,
    /// Items in the whole list.
    pub total: u64,
    pub total_pages: u64,
}

impl<T> Paginated<T> {
    pub fn of(page: Page<T>, request: PageRequest) -> Self {
        let size = u64::from(request.page_size.max(1));
        Self {
            data: page.items,
            pagination: Pagination {
                page: request.page,
                page_size: request.page_size,
                total: page.total,
                total_pages: page.total.div_ceil(size),
            },
        }
    }

    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Paginated<U> {
        Paginated {
            data: self.data.into_iter().map(f).collect(),
            pagination: self.pagination,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_1_to_the_largest_32_bit_integer_and_sizes_1_to_100() {
        let req = |page, page_size| PageParams { page, page_size }.to_request();
        assert!(req(Some(MAX_PAGE), Some(100)).is_ok());
        for (page, size) in [
            (Some(MAX_PAGE + 1), Some(5)),
            (Some(0), Some(5)),
            (Some(1), Some(0)),
            (Some(1), Some(101)),
            (Some(1), None),
            (None, Some(1)),
        ] {
            let err = req(page, size).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidPagination, "{page:?} {size:?}");
        }
        assert_eq!(req(None, None).unwrap(), PageRequest::DEFAULT);
    }
}
