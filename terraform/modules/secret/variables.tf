variable "project_id" {
  description = "Project that owns the secret."
  type        = string
}

variable "secret_id" {
  description = "Secret id, e.g. OPENAI_API_KEY."
  type        = string
  validation {
    condition     = can(regex("^[A-Za-z0-9_-]{1,255}$", var.secret_id))
    error_message = "Secret ids are 1-255 letters, digits, hyphens and underscores."
  }
}

variable "labels" {
  description = "Secret labels."
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
