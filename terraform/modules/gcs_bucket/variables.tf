variable "project_id" {
  description = "Project that owns the bucket."
  type        = string
}

variable "name" {
  description = "Globally unique bucket name."
  type        = string
  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$", var.name))
    error_message = "Bucket names are 3-63 lowercase letters, digits, dots, hyphens and underscores."
  }
}

variable "location" {
  description = "Bucket location (a region keeps it next to Cloud Run)."
  type        = string
}

variable "storage_class" {
  description = "Default storage class."
  type        = string
  default     = "STANDARD"
}

variable "delete_after_days" {
  description = "Objects older than this many days are deleted."
  type        = number
  validation {
    condition     = var.delete_after_days >= 1
    error_message = "delete_after_days must be at least 1."
  }
}

variable "versioning" {
  description = "Keep noncurrent object versions (also deleted after delete_after_days)."
  type        = bool
  default     = false
}

variable "force_destroy" {
  description = "Let terraform destroy delete a bucket that still holds objects."
  type        = bool
  default     = false
}

variable "labels" {
  description = "Bucket labels."
  type        = map(string)
  default     = {}
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
