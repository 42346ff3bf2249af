variable "project_id" {
  description = "Project that owns the queue."
  type        = string
}

variable "location" {
  description = "Queue region."
  type        = string
}

variable "name" {
  description = "Queue name. A deleted queue's name cannot be reused for about 7 days."
  type        = string
  validation {
    condition     = can(regex("^[A-Za-z0-9-]{1,100}$", var.name))
    error_message = "Queue names are 1-100 letters, digits and hyphens."
  }
}

variable "retry" {
  description = "Retry behaviour of a failed task."
  type = object({
    max_attempts               = number
    min_backoff_seconds        = optional(number, 1)
    max_backoff_seconds        = optional(number, 300)
    max_doublings              = optional(number, 5)
    max_retry_duration_seconds = optional(number, 0)
  })
  validation {
    condition     = var.retry.max_attempts == -1 || var.retry.max_attempts >= 1
    error_message = "max_attempts must be -1 (unlimited) or at least 1."
  }
  validation {
    condition     = var.retry.min_backoff_seconds <= var.retry.max_backoff_seconds
    error_message = "min_backoff_seconds must not exceed max_backoff_seconds."
  }
}

variable "rate_limits" {
  description = "Dispatch limits."
  type = object({
    max_dispatches_per_second = optional(number, 10)
    max_concurrent_dispatches = optional(number, 100)
  })
  default = {}
}

variable "log_sampling_ratio" {
  description = "Fraction of task operations written to Cloud Logging (0 to 1)."
  type        = number
  default     = 1
  validation {
    condition     = var.log_sampling_ratio >= 0 && var.log_sampling_ratio <= 1
    error_message = "log_sampling_ratio must be between 0 and 1."
  }
}

variable "iam" {
  description = "Role => members granted on the resource (authoritative per role)."
  type        = map(list(string))
  default     = {}
  validation {
    condition = alltrue(flatten([
      for members in values(var.iam) : [
        for m in members : !contains(["allUsers", "allAuthenticatedUsers"], m)
      ]
    ]))
    error_message = "allUsers and allAuthenticatedUsers may not be granted."
  }
}
