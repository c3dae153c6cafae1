//! Pagination: `page` and `page_size` in, `{data, pagination}` out.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use verdict_store::model::MAX_PAGE_SIZE;
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
